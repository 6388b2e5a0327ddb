// Refreshes the status without a full page load. Without JavaScript the
// page is simply a page: reload it to refresh.
(function () {
  var content = document.getElementById("content");
  if (!content || !window.fetch) return;
  var stamp = document.getElementById("refreshed");
  function refresh() {
    fetch("/?partial=1", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
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
})();
