// Image-upload combos (LoadImage's `image`): an "upload" button after the combo (its value "image"
// is saved in widgets_values but never sent), uploads through POST /upload/image, and a preview of
// the chosen input file on the node.

import { api } from "./api.js";
import { notify } from "./notice.js";
import { showImages } from "./node_images.js";

function splitName(value) {
  const at = value.lastIndexOf("/");
  return at < 0 ? { filename: value, subfolder: "" } : { filename: value.slice(at + 1), subfolder: value.slice(0, at) };
}

/** Preview the combo's file, when the server listed it (unknown names would only 404). */
export function previewSelectedImage(node) {
  const combo = node.imageCombo;
  if (combo && combo.value && combo.options.values.includes(combo.value)) {
    showImages(node, [{ ...splitName(combo.value), type: "input" }]);
  }
}

function chooseFile(node) {
  const picker = document.createElement("input");
  picker.type = "file";
  picker.accept = "image/*";
  picker.addEventListener("change", () => {
    if (picker.files.length) uploadImageTo(node, picker.files[0]);
  });
  picker.click();
}

export function addUploadWidget(node, combo) {
  node.imageCombo = combo;
  combo.callback = () => previewSelectedImage(node);
  const button = node.addWidget("button", "upload", "image", () => chooseFile(node), { serialize: false });
  button.label = "choose file to upload";
  return button;
}

/** Upload a File or Blob and select it in the node's image combo. */
export async function uploadImageTo(node, file, filename = file.name || "pasted.png") {
  const combo = node.imageCombo;
  try {
    const { name, subfolder } = await api.uploadImage(file, filename);
    const value = subfolder ? `${subfolder}/${name}` : name;
    if (!combo.options.values.includes(value)) combo.options.values.push(value);
    combo.value = value;
    previewSelectedImage(node);
    node.setDirtyCanvas(true, true);
  } catch (error) {
    notify(`Upload failed: ${error.message}`, "error");
  }
}
