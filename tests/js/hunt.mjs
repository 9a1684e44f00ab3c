// A whole hunt through the shop's API with @gradio/client: docs/api.md shows this file; tests/test_api.py runs it.
// Usage: node hunt.mjs http://127.0.0.1:7860
import { Client } from "@gradio/client";

const client = await Client.connect(process.argv[2]);
const recommend = async (args) => (await client.predict("/recommend", args)).data[0];

// A new hunt (empty visit), steered by typed words; then three rounds, each picking the first product shown.
let answer = await recommend({ visit: "", pick: "", words: "lamp", strategy: "" });
for (let round = 0; round < 3; round++) {
  const liked = answer.products[0];
  answer = await recommend({ visit: answer.visit, pick: liked.id, words: "", strategy: "" });
}
const product = (await client.predict("/product", { id: answer.products[0].id })).data[0];
const done = (await client.predict("/found", { visit: answer.visit, id: product.id })).data[0];
console.log(JSON.stringify({ round: answer.round, seen: answer.seen, total: answer.total,
                             ids: answer.products.map((p) => p.id), image: answer.products[0].image,
                             title: product.title, found: done.found, rounds: done.rounds }));
process.exit(0); // the client keeps a heartbeat stream to the shop open (its page has per-visit state)
