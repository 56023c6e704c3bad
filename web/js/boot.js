// Entry point. Every other module needs the litegraph.js global, so check for it before importing
// them: a missing `web/node_modules` must give an explanation, not a blank page.

const SETUP_HINT = "make setup    (or: npm ci --prefix web)";

function showFatal(title, detail, command) {
  const box = document.getElementById("fatal");
  box.replaceChildren();
  const heading = document.createElement("h1");
  heading.textContent = title;
  const text = document.createElement("p");
  text.textContent = detail;
  box.append(heading, text);
  if (command) {
    const code = document.createElement("pre");
    code.textContent = command;
    box.append(code);
  }
  box.hidden = false;
  document.body.classList.add("fatal");
}

if (!globalThis.LiteGraph) {
  showFatal(
    "The editor's front-end packages are missing",
    "web/node_modules/litegraph.js could not be loaded. Install the front-end packages in the " +
      "repository root, then reload this page:",
    SETUP_HINT,
  );
} else {
  import("./app.js")
    .then((app) => app.start())
    .catch((error) => {
      console.error(error);
      showFatal("The editor failed to start", String(error?.stack || error));
    });
}
