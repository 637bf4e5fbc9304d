// The admin usage dashboard: draws the series the page embeds as JSON (no inline script, so a
// strict Content-Security-Policy holds). Chart.js is served from our own static files.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  const data = JSON.parse(document.getElementById("usage-data").textContent);
  const palette = ["#417690", "#ba2121", "#79aec8", "#e0a526", "#5b8c3a", "#8a5ab5", "#999999"];
  const color = (i) => palette[i % palette.length];

  new Chart(document.getElementById("chart-department-month"), {
    type: "bar",
    data: {
      labels: data.months,
      datasets: data.cost_per_department.map((series, i) => ({
        label: series.label, data: series.data, backgroundColor: color(i),
      })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });

  new Chart(document.getElementById("chart-top-llms"), {
    type: "bar",
    data: {
      labels: data.top_llms.labels,
      datasets: [{ label: "Cost (USD)", data: data.top_llms.cost, backgroundColor: color(0) }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } } },
  });

  new Chart(document.getElementById("chart-calls"), {
    data: {
      labels: data.days,
      datasets: [
        { type: "bar", label: "Calls", data: data.calls, backgroundColor: color(2), yAxisID: "y" },
        { type: "line", label: "Error rate (%)", data: data.error_rate, borderColor: color(1),
          backgroundColor: color(1), yAxisID: "rate" },
      ],
    },
    options: {
      scales: {
        y: { beginAtZero: true, position: "left" },
        rate: { beginAtZero: true, position: "right", suggestedMax: 10, grid: { drawOnChartArea: false } },
      },
    },
  });

  new Chart(document.getElementById("chart-tokens"), {
    type: "bar",
    data: {
      labels: data.days,
      datasets: [
        { label: "Prompt", data: data.prompt_tokens, backgroundColor: color(0) },
        { label: "Completion", data: data.completion_tokens, backgroundColor: color(3) },
        { type: "line", label: "Cached (part of prompt)", data: data.cached_tokens, borderColor: color(4), stack: "cached" },
      ],
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
});
