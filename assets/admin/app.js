// permaproxy admin: small improvements on pages that work without it.
// Embedded in the binary and served from the admin listener (CSP: script-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: <button data-copy="input-id">.
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", async () => {
      const input = document.getElementById(b.dataset.copy);
      if (!input) return;
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (_) {
        input.select();
        document.execCommand("copy");
      }
      const label = b.textContent;
      b.textContent = "Copied";
      setTimeout(() => { b.textContent = label; }, 1500);
    });
  }
  // Forms that ask first: <form data-confirm="question">.
  for (const f of document.querySelectorAll("form[data-confirm]")) {
    f.addEventListener("submit", (e) => {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  }
  // "Type the user id to confirm": the button waits for an exact match.
  // The server checks it too; this only saves a round trip.
  for (const input of document.querySelectorAll("input[data-must-equal]")) {
    const button = input.form && input.form.querySelector("button[type=submit]");
    if (!button) continue;
    const sync = () => { button.disabled = input.value !== input.dataset.mustEqual; };
    input.addEventListener("input", sync);
    sync();
  }
});
