// The broker's ceiling on this machine, from a client that is not Python: amqplib consuming
// the given queues and acking (multiple, every 50 per channel), as bench/consume.py does.
//
//   node consume.mjs AMQP_URL TOTAL PREFETCH QUEUE[,QUEUE...]
//
// Prints one JSON line: the marks at 20% and 80% of TOTAL ({t, done, cpu}: seconds, units of
// work, CPU seconds of this process) and the span from the first delivery to the last.
import amqp from 'amqplib';

const [url, totalArg, prefetchArg, queuesArg] = process.argv.slice(2);
const total = Number(totalArg);
const prefetch = Number(prefetchArg);
const ACK_EVERY = 50;
const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

let done = 0;
let first = null;
let last = null;
const marks = [];
let next = 0.2 * total;

const connection = await amqp.connect(url);
const finished = new Promise((resolve) => {
  for (const queue of queuesArg.split(',')) {
    connection.createChannel().then(async (channel) => {
      await channel.prefetch(prefetch);
      let seen = 0;
      await channel.consume(queue, (message) => {
        const t = now();
        if (first === null) first = t;
        last = t;
        done += 1;
        seen += 1;
        if (done >= next && marks.length < 2) {
          marks.push({ t, done, cpu: cpu() });
          next = marks.length === 1 ? 0.8 * total : Infinity;
        }
        if (seen % ACK_EVERY === 0 || done >= total) channel.ack(message, true);
        if (done >= total) resolve();
      });
    });
  }
});
await finished;
process.stdout.write(JSON.stringify({ marks, span: { first, last, done } }) + '\n');
await connection.close();
