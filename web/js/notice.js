// One-line notices over the canvas: information fades after a few seconds, errors stay until
// dismissed or replaced.

let timer = null;

export function notify(message, level = "info") {
  const box = document.getElementById("notice");
  clearTimeout(timer);
  box.textContent = message;
  box.className = level;
  box.hidden = false;
  box.onclick = () => { box.hidden = true; };
  if (level !== "error") timer = setTimeout(() => { box.hidden = true; }, 4000);
}
