// The official openai Node SDK through allm-proxy: generate, edit (a file stream, a list, a mask), stream.
// Run by tests/node/test_node_sdk.py with ALLM_BASE_URL, ALLM_IMAGE (a PNG path) and ALLM_MASK set.
// Prints one JSON object with what the SDK returned, for the Python test to check.
import fs from "node:fs";
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.ALLM_BASE_URL, apiKey: "sk-test-node", maxRetries: 0 });
const png = fs.readFileSync(process.env.ALLM_IMAGE);
const out = {};

const generated = await client.images.generate({ model: "gpt-image-1", prompt: "a cat", n: 2, size: "1024x1536" });
out.generate = { count: generated.data.length, size: generated.size, b64: generated.data[0].b64_json,
                 total_tokens: generated.usage.total_tokens };

const edited = await client.images.edit({
  model: "dall-e-2",
  image: fs.createReadStream(process.env.ALLM_IMAGE),
  mask: await toFile(fs.readFileSync(process.env.ALLM_MASK), "mask.png", { type: "image/png" }),
  prompt: "a hat",
  response_format: "b64_json",
});
out.edit = { count: edited.data.length, b64: edited.data[0].b64_json };

const listed = await client.images.edit({
  model: "gpt-image-1",
  image: [await toFile(png, "a.png", { type: "image/png" }), await toFile(png, "b.png", { type: "image/png" })],
  prompt: "merge",
});
out.edit_list = { count: listed.data.length };

const stream = await client.images.generate({ model: "gpt-image-1", prompt: "a cat", stream: true, partial_images: 1 });
out.stream = [];
for await (const event of stream) out.stream.push(event.type);

try {
  await client.images.generate({ model: "no-such-image-model", prompt: "a cat" });
  out.error = null;
} catch (err) {
  out.error = { status: err.status, code: err.code, param: err.param, request_id: err.requestID ?? null };
}

process.stdout.write(JSON.stringify(out));
