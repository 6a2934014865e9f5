for (const t of process.argv.slice(2)) await import(t);
global.gc?.(); await new Promise(r=>setTimeout(r,300)); global.gc?.();
const m = process.memoryUsage();
console.log(process.argv.slice(2).join('+')||'nothing', 'rss', Math.round(m.rss/1048576), 'heap', Math.round(m.heapUsed/1048576), 'heapTotal', Math.round(m.heapTotal/1048576), 'ext', Math.round(m.external/1048576));
