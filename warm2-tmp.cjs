require('./bin/code-cache.cjs').useCodeCache(require('path').join(__dirname,'dist/bundle'));
const { main } = require('./dist/bundle/kiln.cjs');
const fs = require('fs');
(async () => {
  const args = process.argv.slice(2);
  for (let i = 0; i < 40; i++) {
    fs.writeFileSync(process.env.CTX + '/one.txt', 'edit ' + i + ' ' + Date.now());
    const t = process.hrtime.bigint();
    const code = await main(args);
    console.error(`run ${i}: ${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(1)} ms code ${code}`);
  }
})();
