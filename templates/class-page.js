"use strict";
(function () {
  var body = document.querySelector("#grid tbody");
  var keys = {
    name: function (row) { return [row.dataset.name.toLowerCase()]; },
    progress: function (row) { return [Number(row.dataset.reached), Number(row.dataset.checks), row.dataset.name.toLowerCase()]; }
  };
  function compare(a, b) {
    for (var i = 0; i < a.length; i++) {
      if (a[i] < b[i]) { return -1; }
      if (a[i] > b[i]) { return 1; }
    }
    return 0;
  }
  document.querySelectorAll("#grid th[data-key]").forEach(function (header) {
    header.querySelector("button").addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      document.querySelectorAll("#grid th[data-key]").forEach(function (other) { other.setAttribute("aria-sort", "none"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var key = keys[header.dataset.key];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) { var order = compare(key(a), key(b)); return ascending ? order : -order; });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  // One open cell at a time; Escape closes it.
  document.querySelectorAll("#grid details").forEach(function (details) {
    details.addEventListener("toggle", function () {
      if (!details.open) { return; }
      document.querySelectorAll("#grid details[open]").forEach(function (other) { if (other !== details) { other.open = false; } });
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { document.querySelectorAll("#grid details[open]").forEach(function (d) { d.open = false; }); }
  });
})();
