require('./bin/code-cache.cjs').useCodeCache(require('path').join(__dirname,'dist/bundle'));
const { main } = require('./dist/bundle/kiln.cjs');
(async () => {
  const args = process.argv.slice(2);
  for (let i = 0; i < 8; i++) {
    const t = process.hrtime.bigint();
    const code = await main(args);
    console.error(`run ${i}: ${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(1)} ms code ${code}`);
  }
})();
