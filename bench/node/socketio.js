// A Socket.IO v4 server (WebSocket transport only): `echo` answers its data with an
// ack, `join` puts the socket in a room (ack), `pub` sends its data to room `bench`
// as `msg`. A peer of tether-bench's sessions.
// node socketio.js PORT
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9106);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ['websocket'], perMessageDeflate: false });
io.on('connection', (socket) => {
  socket.on('echo', (text, ack) => ack(text));
  socket.on('join', (room, ack) => {
    socket.join(room);
    ack(room);
  });
  socket.on('pub', (data) => io.to('bench').emit('msg', data));
});
httpServer.listen(port, '127.0.0.1');
