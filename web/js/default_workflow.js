// The workflow shown on first open: text to image with a Stable Diffusion checkpoint.
// Until the server has these node types they load as placeholders, which is harmless.

function node(id, type, pos, size, order, { inputs, outputs, values }) {
  return {
    id, type, pos, size, flags: {}, order, mode: 0,
    inputs: inputs.map(([name, slotType, link]) => ({ name, type: slotType, link })),
    outputs: outputs.map(([name, slotType, links], slot) => ({ name, type: slotType, links, slot_index: slot })),
    properties: { "Node name for S&R": type },
    widgets_values: values,
  };
}

/** txt2img; `defs` (the /object_info body) picks the first checkpoint the server has. */
export function defaultWorkflow(defs) {
  const checkpoints = defs.CheckpointLoaderSimple?.input?.required?.ckpt_name?.[0];
  const checkpoint = Array.isArray(checkpoints) && checkpoints.length ? checkpoints[0] : "v1-5-pruned-emaonly.safetensors";
  return {
    last_node_id: 9,
    last_link_id: 9,
    nodes: [
      node(4, "CheckpointLoaderSimple", [0, 330], [360, 98], 0, {
        inputs: [], outputs: [["MODEL", "MODEL", [1]], ["CLIP", "CLIP", [3, 5]], ["VAE", "VAE", [8]]], values: [checkpoint],
      }),
      node(6, "CLIPTextEncode", [400, 60], [400, 180], 2, {
        inputs: [["clip", "CLIP", 3]], outputs: [["CONDITIONING", "CONDITIONING", [4]]],
        values: ["a watercolor painting of a lighthouse on a cliff at sunset, soft light"],
      }),
      node(7, "CLIPTextEncode", [400, 290], [400, 180], 3, {
        inputs: [["clip", "CLIP", 5]], outputs: [["CONDITIONING", "CONDITIONING", [6]]], values: ["blurry, low quality, watermark, text"],
      }),
      node(5, "EmptyLatentImage", [450, 520], [315, 106], 1, {
        inputs: [], outputs: [["LATENT", "LATENT", [2]]], values: [512, 512, 1],
      }),
      node(3, "KSampler", [850, 60], [315, 262], 4, {
        inputs: [["model", "MODEL", 1], ["positive", "CONDITIONING", 4], ["negative", "CONDITIONING", 6], ["latent_image", "LATENT", 2]],
        outputs: [["LATENT", "LATENT", [7]]], values: [0, "randomize", 20, 8, "euler", "normal", 1],
      }),
      node(8, "VAEDecode", [1210, 60], [210, 46], 5, {
        inputs: [["samples", "LATENT", 7], ["vae", "VAE", 8]], outputs: [["IMAGE", "IMAGE", [9]]], values: [],
      }),
      node(9, "SaveImage", [1210, 160], [400, 460], 6, {
        inputs: [["images", "IMAGE", 9]], outputs: [], values: ["Sumi"],
      }),
    ],
    links: [
      [1, 4, 0, 3, 0, "MODEL"],
      [2, 5, 0, 3, 3, "LATENT"],
      [3, 4, 1, 6, 0, "CLIP"],
      [4, 6, 0, 3, 1, "CONDITIONING"],
      [5, 4, 1, 7, 0, "CLIP"],
      [6, 7, 0, 3, 2, "CONDITIONING"],
      [7, 3, 0, 8, 0, "LATENT"],
      [8, 4, 2, 8, 1, "VAE"],
      [9, 8, 0, 9, 0, "IMAGE"],
    ],
    groups: [],
    config: {},
    extra: { ds: { scale: 0.8, offset: [30, 40] } },
    version: 0.4,
  };
}
