// Runs @firestore-emulator/server on loopback, for the tests where gcloud's official
// Firestore emulator is absent (tests/stand_ins.py starts it).
//
//   node firestore-emulator.js GRPC_PORT ADMIN_PORT
//
// The package's own start() binds 0.0.0.0, so this binds its gRPC server to 127.0.0.1
// itself. The package speaks gRPC only; ADMIN_PORT serves the two HTTP calls the tests make
// of gcloud's emulator: GET / (ready) and
// DELETE /emulator/v1/projects/<project>/databases/(default)/documents (empty the database;
// this server empties every project, the tests use one). Stops on SIGTERM and SIGINT.
"use strict";

const http = require("node:http");
const { ServerCredentials } = require("@grpc/grpc-js");
const { FirestoreServer } = require("@firestore-emulator/server");

const [grpcPort, adminPort] = process.argv.slice(2).map(Number);
if (!Number.isInteger(grpcPort) || !Number.isInteger(adminPort)) {
  console.error("usage: node firestore-emulator.js GRPC_PORT ADMIN_PORT");
  process.exit(2);
}

const emulator = new FirestoreServer();
const RESET = /^\/emulator\/v1\/projects\/[^/]+\/databases\/\(default\)\/documents$/;

const admin = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/") {
    res.end("Ok\n");
  } else if (req.method === "DELETE" && RESET.test(req.url)) {
    emulator.state.clear();
    res.end("{}\n");
  } else {
    res.statusCode = 404;
    res.end(`no ${req.method} ${req.url} here\n`);
  }
});

// `server` is private in the package's TypeScript, not at run time.
emulator.server.bindAsync(
  `127.0.0.1:${grpcPort}`,
  ServerCredentials.createInsecure(),
  (err) => {
    if (err) {
      console.error(`cannot bind 127.0.0.1:${grpcPort}: ${err.message}`);
      process.exit(1);
    }
    // Ready only once both listen: the tests poll GET / on the admin port.
    admin.listen(adminPort, "127.0.0.1", () => {
      console.log(`firestore emulator: grpc 127.0.0.1:${grpcPort}, admin 127.0.0.1:${adminPort}`);
    });
  },
);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    emulator.stop();
    admin.close();
    process.exit(0);
  });
}
