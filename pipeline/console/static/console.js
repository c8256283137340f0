// The console's live parts: each <canvas data-feed="name"> is a Chart.js chart fed by
// /console/feed/<name>, and each element with data-live="feed:key" shows that feed's value;
// both refresh every REFRESH_MS without a reload.
"use strict";
(function () {
  const REFRESH_MS = 5000;
  const PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6",
                   "#14b8a6", "#f97316", "#64748b", "#ec4899"];
  const charts = new Map();

  function datasetsOf(feed) {
    return feed.datasets.map((d, i) => ({
      label: d.label,
      data: d.data,
      backgroundColor: feed.type === "line" ? PALETTE[i % PALETTE.length] + "33"
                                            : PALETTE[i % PALETTE.length],
      borderColor: PALETTE[i % PALETTE.length],
      borderWidth: feed.type === "line" ? 2 : 0,
      fill: feed.type === "line" && feed.stacked,
      tension: 0.25,
      pointRadius: 0,
    }));
  }

  async function refresh(canvas) {
    const name = canvas.dataset.feed;
    let feed;
    try {
      const response = await fetch("/console/feed/" + name, {credentials: "same-origin"});
      if (!response.ok) return;
      feed = await response.json();
    } catch (e) { return; }
    canvas.dataset.loaded = "1";
    const known = charts.get(canvas);
    if (known) {
      known.data.labels = feed.labels;
      known.data.datasets = datasetsOf(feed);
      known.update("none");
      return;
    }
    charts.set(canvas, new Chart(canvas, {
      type: feed.type,
      data: {labels: feed.labels, datasets: datasetsOf(feed)},
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        indexAxis: feed.horizontal ? "y" : "x",
        plugins: {legend: {display: feed.datasets.length > 1, position: "bottom"}},
        scales: {x: {stacked: !!feed.stacked, grid: {display: false}},
                 y: {stacked: !!feed.stacked, beginAtZero: true}},
      },
    }));
  }

  async function refreshLive() {
    const feeds = new Set();
    document.querySelectorAll("[data-live]").forEach(el => feeds.add(el.dataset.live.split(":")[0]));
    for (const name of feeds) {
      let values;
      try {
        const response = await fetch("/console/feed/" + name, {credentials: "same-origin"});
        if (!response.ok) continue;
        values = await response.json();
      } catch (e) { continue; }
      document.querySelectorAll(`[data-live^="${name}:"]`).forEach(el => {
        const key = el.dataset.live.slice(name.length + 1);
        if (key in values) el.textContent = values[key];
      });
    }
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function tick() {
    document.querySelectorAll("canvas[data-feed]").forEach(refresh);
    refreshLive();
  }
  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, REFRESH_MS);
  });
})();
