// DALL-E-era Node code that names no model, through allm-proxy on the fake provider.
// Run by tests/node/test_node_sdk.py with ALLM_BASE_URL, ALLM_IMAGE (a 256x256 RGBA PNG) and ALLM_MASK set.
// Prints one JSON object with what the SDK returned, for the Python test to check.
import fs from "node:fs";
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.ALLM_BASE_URL, apiKey: "sk-test-node", maxRetries: 0 });
const out = { sizes: {} };

for (const size of ["256x256", "512x512", "1024x1024"]) {
  const result = await client.images.generate({ prompt: "a heron", size });
  out.sizes[size] = { count: result.data.length, url: result.data[0].url, usage: result.usage ?? null };
}

const three = await client.images.generate({ prompt: "a heron", size: "256x256", n: 3 });
out.three = three.data.map((d) => d.url);

const edited = await client.images.edit({
  image: await toFile(fs.readFileSync(process.env.ALLM_IMAGE), "a.png", { type: "image/png" }),
  mask: await toFile(fs.readFileSync(process.env.ALLM_MASK), "mask.png", { type: "image/png" }),
  prompt: "a hat",
  size: "256x256",
});
out.edit = { url: edited.data[0].url };

const stream = await client.images.generate({ prompt: "a heron", stream: true, partial_images: 1 });
out.stream = [];
for await (const event of stream) out.stream.push(event.type);

try {
  await client.images.generate({ prompt: "a heron", stream: true, size: "256x256" });
  out.stream_error = null;
} catch (err) {
  out.stream_error = { status: err.status, code: err.code, param: err.param };
}
console.log(JSON.stringify(out));
