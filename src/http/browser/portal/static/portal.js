// The portal's only script: the "Copy" button next to a secret shown once. It reads the secret
// from the page's read-only field; it never sees a token (the portal keeps those on the server).
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  if (!field) return;
  field.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(field.value);
    copied = true;
  } catch (_) {
    // Clipboard API refused (permissions, insecure origin): fall back to the selection.
    copied = document.execCommand && document.execCommand("copy");
  }
  button.textContent = copied ? "Copied" : "Copy";
  if (status) {
    status.textContent = copied ? "Copied to the clipboard." : "Press Ctrl+C (⌘C) to copy the selected key.";
  }
});
