// Draws each chart from its element's data-figure attribute (a Plotly figure as JSON). Loaded with
// `defer`: it runs once the whole grid exists, so each chart is sized to its own cell, and
// `responsive` redraws it when the cell changes. No inline script: the page's CSP forbids them.
for (const div of document.querySelectorAll("[data-figure]")) {
  const figure = JSON.parse(div.dataset.figure);
  Plotly.newPlot(div, figure.data, figure.layout, { responsive: true, displaylogo: false });
}
