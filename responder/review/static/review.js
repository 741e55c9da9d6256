// The review page: draft actions over fetch (JSON), keyboard shortcuts, posting with a dry run first.
// Every change is sent at once; the server writes the replies file and answers with the new card.
(function () {
  "use strict";
  const HEADERS = { "Content-Type": "application/json", "X-Review": "1" };
  let current = null;

  function cards() { return Array.from(document.querySelectorAll("article.draft")); }

  function select(card) {
    if (!card) return;
    if (current) current.classList.remove("current");
    current = card;
    card.classList.add("current");
    card.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    const all = cards();
    if (!all.length) return;
    const at = all.indexOf(current);
    select(all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))]);
  }

  function shownFlags(card) {
    return Array.from(card.querySelectorAll("li.flag")).map((li) => li.dataset.flag);
  }

  function updateCounts(counts) {
    for (const [name, n] of Object.entries(counts || {})) {
      const el = document.querySelector(`[data-count="${name}"]`);
      if (el) el.textContent = n;
    }
  }

  async function act(card, action) {
    const box = card.querySelector("textarea.reply");
    if (action === "approve" && box && box.value !== box.dataset.original) action = "edit";
    const body = { shown: shownFlags(card) };
    if (action === "edit") body.reply = box ? box.value : "";
    const msg = card.querySelector(".msg");
    msg.textContent = action === "regenerate" ? "Asking the responder…" : "Saving…";
    card.classList.add("busy");
    try {
      const res = await fetch(`/api/drafts/${encodeURIComponent(card.dataset.id)}/${action}`,
        { method: "POST", headers: HEADERS, body: JSON.stringify(body) });
      const data = await res.json();
      if (!res.ok) throw new Error(data.detail || res.statusText);
      const wasCurrent = card === current;
      card.insertAdjacentHTML("afterend", data.card);
      const fresh = card.nextElementSibling;
      card.remove();
      fresh.querySelector(".msg").textContent = "Saved.";
      updateCounts(data.counts);
      if (wasCurrent) select(fresh);
    } catch (err) {
      card.classList.remove("busy");
      msg.textContent = "Not saved: " + err.message;
      msg.classList.add("error");
    }
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) {
      const card = button.closest("article.draft");
      select(card);
      act(card, button.dataset.action);
      return;
    }
    const card = ev.target.closest("article.draft");
    if (card) select(card);
  });

  document.addEventListener("keydown", (ev) => {
    const typing = ev.target.matches("textarea, input");
    if (typing) {
      if (ev.key === "Escape") { ev.target.blur(); }
      else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        act(ev.target.closest("article.draft"), "edit");
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const actions = { a: "approve", r: "reject", g: "regenerate" };
    if (ev.key === "j") move(1);
    else if (ev.key === "k") move(-1);
    else if (ev.key === "e" && current) {
      ev.preventDefault();
      const box = current.querySelector("textarea.reply");
      if (box) { box.focus(); box.setSelectionRange(box.value.length, box.value.length); }
    } else if (actions[ev.key] && current && current.querySelector(`[data-action="${actions[ev.key]}"]`)) {
      act(current, actions[ev.key]);
    }
  });

  // Posting: the dry run first, then the real post through the same ledger as `responder post`.
  const panel = document.getElementById("post-panel");
  const panelBody = document.getElementById("post-body");
  const confirmButton = document.getElementById("post-confirm");

  function table(rows) {
    const t = document.createElement("table");
    for (const [label, n] of rows) {
      const tr = t.insertRow();
      tr.insertCell().textContent = label;
      tr.insertCell().textContent = n;
    }
    return t;
  }

  async function postCall(method) {
    const res = await fetch("/api/post", { method, headers: HEADERS });
    const data = await res.json();
    if (!res.ok) throw new Error(data.detail || res.statusText);
    return data;
  }

  document.getElementById("post-approved").addEventListener("click", async () => {
    panel.hidden = false;
    confirmButton.hidden = true;
    panelBody.textContent = "Dry run…";
    try {
      const data = await postCall("GET");
      panelBody.replaceChildren(Object.assign(document.createElement("p"),
        { textContent: `Dry run: nothing posted yet. ${data.would_post} approved repl${data.would_post === 1 ? "y" : "ies"} would be posted.` }),
        table(data.rows));
      if (data.would_post > 0) {
        confirmButton.textContent = `Post ${data.would_post} repl${data.would_post === 1 ? "y" : "ies"} to YouTube`;
        confirmButton.hidden = false;
      }
    } catch (err) { panelBody.textContent = "Dry run failed: " + err.message; }
  });

  confirmButton.addEventListener("click", async () => {
    confirmButton.hidden = true;
    panelBody.textContent = "Posting…";
    try {
      const data = await postCall("POST");
      const head = data.stopped ? `Stopped: ${data.stopped}` : `Posted ${data.posted}.`;
      panelBody.replaceChildren(Object.assign(document.createElement("p"), { textContent: head, className: "result" }),
        table(data.rows), Object.assign(document.createElement("p"), { innerHTML: '<a href="">Reload</a> to see what was posted.' }));
    } catch (err) { panelBody.textContent = "Not posted: " + err.message; }
  });

  document.getElementById("post-close").addEventListener("click", () => { panel.hidden = true; });
  select(cards()[0]);
})();
