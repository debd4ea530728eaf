// A plain WebSocket echo server on `ws` (no compression): a peer of tether-bench.
// node ws_echo.js PORT
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9105);
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
});
