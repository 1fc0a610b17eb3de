// Public surface of the protocol module (the only module that imports mqtt-packet).
export * from './reason-codes.js';
export * from './framer.js';
export * from './validate.js';
export * from './codec.js';
export * from './topic.js';
export * from './publish.js';
