// WebSocket client (spec comfy_api.md §5.4): JSON messages are re-dispatched as events named after
// their `type`; binary preview frames become "b_preview" events; the socket reconnects by itself.

import { socketUrl } from "./api.js";

const PREVIEW_IMAGE = 1;
const PREVIEW_IMAGE_WITH_METADATA = 4;
const IMAGE_FORMATS = { 1: "image/jpeg", 2: "image/png" };

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ServerSocket extends EventTarget {
  constructor() {
    super();
    this.clientId = sessionStorage.getItem("sumi.clientId") || randomId();
    sessionStorage.setItem("sumi.clientId", this.clientId);
    this.retryDelay = 500;
  }

  connect() {
    const socket = new WebSocket(socketUrl(this.clientId));
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this.retryDelay = 500;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.emit("connection", { online: true });
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      this.emit("connection", { online: false });
      setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 10000);
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  receive(data) {
    if (typeof data !== "string") {
      this.receivePreview(new DataView(data), data);
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "status" && message.data?.sid) this.clientId = message.data.sid;
    this.emit(message.type, message.data);
  }

  receivePreview(view, buffer) {
    const kind = view.getUint32(0);
    if (kind === PREVIEW_IMAGE) {
      const type = IMAGE_FORMATS[view.getUint32(4)] || "image/jpeg";
      this.emit("b_preview", { blob: new Blob([buffer.slice(8)], { type }), nodeId: null });
    } else if (kind === PREVIEW_IMAGE_WITH_METADATA) {
      const length = view.getUint32(4);
      const meta = JSON.parse(new TextDecoder().decode(buffer.slice(8, 8 + length)));
      const blob = new Blob([buffer.slice(8 + length)], { type: meta.image_type || "image/png" });
      this.emit("b_preview", { blob, nodeId: meta.display_node_id ?? meta.node_id });
    }
  }
}
