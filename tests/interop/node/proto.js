// The interop service's definitions, loaded at run time by @grpc/proto-loader from
// tests/interop/protos (the same files the Python stubs are generated from).
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', 'protos');

function load() {
  const definition = protoLoader.loadSync('interop_testing/test.proto', {
    includeDirs: [PROTOS],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).grpc.testing;
}

module.exports = { grpc, load };
