// The queue and history panel, from GET /api/jobs (spec comfy_api.md §5.3.5): running and pending
// prompts, finished ones with their first image (click a job for all of its images), failures
// with the server's message.

import { api, viewUrl } from "./api.js";

const LIMIT = 30;

function image(item, jobId) {
  const img = document.createElement("img");
  img.src = viewUrl(item);
  img.alt = item.filename;
  img.dataset.jobId = jobId;
  if (item.nodeId !== undefined) img.dataset.nodeId = item.nodeId;
  return img;
}

async function showAllOutputs(li, job) {
  const holder = li.querySelector(".outputs");
  if (holder.childElementCount) {
    holder.replaceChildren();
    return;
  }
  const detail = await api.job(job.id);
  for (const [nodeId, ui] of Object.entries(detail.outputs ?? {})) {
    for (const item of ui?.images ?? []) holder.append(image({ ...item, nodeId }, job.id));
  }
}

function jobItem(job) {
  const li = document.createElement("li");
  li.className = `job ${job.status}`;
  li.dataset.jobId = job.id;
  const head = document.createElement("div");
  head.className = "job-head";
  const when = new Date(job.create_time).toLocaleTimeString();
  head.textContent = `${job.status.replace("_", " ")} · ${when}${job.outputs_count ? ` · ${job.outputs_count} output(s)` : ""}`;
  li.append(head);
  if (job.execution_error) {
    const error = document.createElement("div");
    error.className = "job-error";
    error.textContent = `${job.execution_error.node_type}: ${String(job.execution_error.exception_message ?? "").trim()}`;
    li.append(error);
  }
  if (job.preview_output) {
    li.append(image(job.preview_output, job.id));
    li.title = "Click to show every output of this prompt";
    li.addEventListener("click", () => showAllOutputs(li, job));
  }
  const outputs = document.createElement("div");
  outputs.className = "outputs";
  li.append(outputs);
  return li;
}

export function createQueuePanel() {
  const list = document.getElementById("job-list");
  let timer = null;
  async function refresh() {
    try {
      const { jobs } = await api.jobs(LIMIT);
      list.replaceChildren(...jobs.map(jobItem));
    } catch (error) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = `Could not read the queue: ${error.message}`;
      list.replaceChildren(li);
    }
  }
  return {
    refresh() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 150);
    },
  };
}
