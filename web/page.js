// Refreshes the status without a full page load. Without JavaScript the
// page is simply a page: reload it to refresh.
(function () {
  var content = document.getElementById("content");
  if (!content || !window.fetch) return;
  var stamp = document.getElementById("refreshed");
  // An open confirm form pauses the refresh, which would replace it.
  var acting = false;
  function refresh() {
    if (acting) return;
    fetch("/?partial=1", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        if (acting) return;
        content.innerHTML = html;
        document.body.classList.remove("offline");
        if (stamp) stamp.textContent = "live, refreshed " + new Date().toLocaleTimeString();
      })
      .catch(function () {
        document.body.classList.add("offline");
        if (stamp) stamp.textContent = "server unreachable, retrying";
      });
  }
  if (stamp) stamp.textContent = "live";
  setInterval(refresh, 5000);

  // Operator actions: a button opens a confirm form in its cell (reason
  // required); confirming posts the action with the commit the page
  // showed, so a lock that changed meanwhile is refused, not acted on.
  content.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button.act");
    if (!btn || acting) return;
    var row = btn.closest("tr");
    var action = btn.getAttribute("data-action");
    var lock = row.getAttribute("data-lock");
    var pool = btn.closest(".pool").getAttribute("data-pool");
    var repo = btn.closest(".repo").getAttribute("data-repo");
    acting = true;
    var form = document.createElement("form");
    form.className = "confirm";
    var reason = document.createElement("input");
    reason.name = "reason"; reason.required = true; reason.maxLength = 500;
    reason.placeholder = "why (kept in the audit)";
    var ok = document.createElement("button");
    ok.type = "submit"; ok.className = "confirm";
    ok.textContent = "confirm " + action + " of " + lock;
    var cancel = document.createElement("button");
    cancel.type = "button"; cancel.textContent = "cancel";
    var msg = document.createElement("div");
    msg.className = "act-error";
    form.append(reason, ok, cancel, msg);
    // A row of its own under the lock, as wide as the table.
    var formRow = document.createElement("tr"), cell = document.createElement("td");
    formRow.className = "confirm-row";
    cell.colSpan = row.cells.length;
    cell.appendChild(form);
    formRow.appendChild(cell);
    row.after(formRow);
    btn.hidden = true;
    reason.focus();
    cancel.addEventListener("click", function () { formRow.remove(); btn.hidden = false; acting = false; });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      ok.disabled = true;
      var body = { reason: reason.value };
      var commit = btn.getAttribute("data-commit");
      if (commit) body.commit = commit;
      var url = "/api/v1/repos/" + encodeURIComponent(repo) + "/pools/" + encodeURIComponent(pool) +
        "/locks/" + encodeURIComponent(lock) + "/" + action;
      fetch(url, { method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
        .then(function (res) {
          if (!res.ok) { msg.textContent = res.j.error || "refused"; ok.disabled = false; return; }
          acting = false;
          refresh();
        })
        .catch(function () { msg.textContent = "server unreachable"; ok.disabled = false; });
    });
  });
})();
