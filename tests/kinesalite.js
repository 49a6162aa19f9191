// Starts kinesalite (a local Kinesis with realistic shard iterators, sequence
// numbers, resharding and closed shards) on 127.0.0.1 only.
// Usage: node tests/kinesalite.js PORT   (NODE_PATH must reach kinesalite)
const kinesalite = require('kinesalite');
const port = parseInt(process.argv[2], 10);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
server.listen(port, '127.0.0.1', () => console.log('listening on 127.0.0.1:' + port));
