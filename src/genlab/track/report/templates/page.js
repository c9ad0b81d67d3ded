// Draw the page's figures and make tables sortable. Everything is inline: no request leaves
// the page.
(function () {
  "use strict";
  var figures = JSON.parse(document.getElementById("genlab-figures").textContent);
  var config = JSON.parse(document.getElementById("genlab-plot-config").textContent);
  var drawn = figures.map(function (figure, i) {
    var target = document.getElementById("figure-" + i);
    return target ? Plotly.newPlot(target, figure.data, figure.layout, config) : null;
  });
  // How many figures plotly.js finished drawing (read by the browser tests).
  Promise.all(drawn).then(function () {
    document.body.setAttribute("data-figures-drawn", String(drawn.filter(Boolean).length));
  });

  function cellValue(row, index) {
    var cell = row.children[index];
    if (!cell) { return ""; }
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) {
      var number = parseFloat(raw);
      return isNaN(number) ? Infinity : number;
    }
    return cell.textContent.trim().toLowerCase();
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, index) {
      th.addEventListener("click", function () {
        var ascending = !th.classList.contains("asc");
        headers.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(ascending ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          if (typeof x === "number" && typeof y === "number") { return ascending ? x - y : y - x; }
          return ascending ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
