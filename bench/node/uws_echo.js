// A plain WebSocket echo server on uWebSockets.js: a peer of tether-bench, when its
// native binary loads on this machine (see bench/README.md).
// node uws_echo.js PORT
'use strict';
const uWS = require('uWebSockets.js');

const port = Number(process.argv[2] || 9107);
uWS
  .App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 1 << 20,
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen('127.0.0.1', port, (token) => {
    if (!token) {
      console.error(`uWebSockets.js could not listen on ${port}`);
      process.exit(1);
    }
  });
