// The jobs page: polls the overview document and redraws three tables. Plain DOM, no framework, no build.
(function () {
  "use strict";

  var app = document.getElementById("app");
  var overviewUrl = app.dataset.overview;
  var pollMs = Number(app.dataset.pollMs) || 1000;
  var numbers = new Intl.NumberFormat("en");
  var SVG = "http://www.w3.org/2000/svg";

  function h(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs[name];
      else node.setAttribute(name, attrs[name]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function replaceRows(table, rows) {
    var body = table.tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function percent(fraction) {
    return (100 * fraction).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0) + "%";
  }

  function seconds(s) {
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return (s / 3600).toFixed(1) + " h";
  }

  function ago(iso, now) {
    return iso ? seconds(Math.max(0, (now - Date.parse(iso)) / 1000)) + " ago" : "";
  }

  function progressBar(job) {
    var total = Math.max(job.total, 1);
    var value = Math.round(1000 * job.progress) / 10;
    return h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(value) },
      h("span", { class: "ok", style: "width:" + (100 * job.succeeded / total) + "%" }),
      h("span", { class: "err", style: "width:" + (100 * job.failed / total) + "%" }));
  }

  function jobRow(job, now) {
    var started = job.started_at ? Date.parse(job.started_at) : null;
    var ended = job.finished_at ? Date.parse(job.finished_at) : now;
    var took = started === null ? "" : seconds(Math.max(0, (ended - started) / 1000));
    var done = job.succeeded + job.failed;
    return h("tr", { "data-job-id": job.id, "data-status": job.status },
      h("td", {}, h("a", { href: job.links.self, class: "mono", title: job.id, text: job.id.slice(0, 12) })),
      h("td", { text: job.model + "@" + job.version }),
      h("td", { class: "tier tier-" + job.tier, text: job.tier }),
      h("td", {}, h("span", { class: "status status-" + job.status, text: job.status })),
      h("td", { class: "progress-col" }, progressBar(job),
        h("span", { class: "count", text: numbers.format(done) + " / " + numbers.format(job.total) + " · " + percent(job.progress) })),
      h("td", { class: "num" + (job.failed ? " bad" : ""), text: numbers.format(job.failed) }),
      h("td", { title: job.created_at || "", text: ago(job.created_at, now) }),
      h("td", { class: "num", text: took }));
  }

  function sparkline(series) {
    var width = 120, height = 24, max = Math.max.apply(null, series.concat([1]));
    var step = series.length > 1 ? width / (series.length - 1) : width;
    var points = series.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (height - 1 - (height - 2) * v / max).toFixed(1);
    }).join(" ");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points);
    svg.appendChild(line);
    return svg;
  }

  function modelRow(model) {
    var fill = model.batch_fill;
    return h("tr", { "data-model": model.name, class: model.live_workers ? "" : "idle" },
      h("td", {}, model.ref, model.synthetic ? h("span", { class: "tag", text: "synthetic" }) : null),
      h("td", { class: "num", text: String(model.live_workers) }),
      h("td", { class: "num items-per-s", text: numbers.format(Math.round(model.items_per_s)) }),
      h("td", { class: "num", text: model.batches_per_s.toFixed(1) }),
      h("td", {}, fill === null ? h("span", { class: "muted", text: "–" }) :
        h("div", { class: "fill", title: "mean items per batch against max_batch_size " + model.max_batch_size },
          h("div", { class: "bar small", role: "meter", "aria-valuenow": String(Math.round(100 * fill)) },
            h("span", { class: "ok", style: "width:" + 100 * fill + "%" })),
          h("span", { class: "count", text: percent(fill) + " of " + model.max_batch_size }))),
      h("td", {}, sparkline(model.series)));
  }

  function tierRow(row) {
    var busy = row.queued_chunks + row.running_chunks + row.held_chunks;
    return h("tr", { "data-model": row.model, "data-tier": row.tier, class: busy ? "" : "idle" },
      h("td", { text: row.model }),
      h("td", { class: "tier tier-" + row.tier, text: row.tier }),
      h("td", { class: "num", text: numbers.format(row.queued_chunks) }),
      h("td", { class: "num", text: numbers.format(row.running_chunks) }),
      h("td", { class: "num", text: numbers.format(row.held_chunks) }),
      h("td", { class: "num", text: numbers.format(row.held_jobs) }),
      h("td", { class: "num", text: row.p95_s === null ? "–" : seconds(row.p95_s) }));
  }

  function deviceCard(device) {
    var list = h("ul", {});
    device.workers.forEach(function (worker) {
      var cuda = worker.cuda_visible_devices ? " · CUDA_VISIBLE_DEVICES=" + worker.cuda_visible_devices : "";
      list.appendChild(h("li", {}, h("span", { class: "mono", text: worker.hostname }),
        h("span", { class: "muted", text: " pid " + worker.pid + cuda }),
        h("div", { class: "models", text: (worker.models || []).join(", ") })));
    });
    return h("div", { class: "device", "data-device": device.device },
      h("h3", {}, device.device, h("span", { class: "badge", text: String(device.workers.length) })), list);
  }

  function render(doc) {
    var now = Date.now();
    replaceRows(document.getElementById("models"), doc.models.map(modelRow));
    replaceRows(document.getElementById("tiers"), (doc.tiers || []).map(tierRow));
    var windowS = doc.models.length ? doc.models[0].window_s : 0;
    document.getElementById("window").textContent = windowS ? "over the last " + windowS + " s" : "";
    var devices = document.getElementById("devices");
    while (devices.firstChild) devices.removeChild(devices.firstChild);
    if (!doc.devices.length) devices.appendChild(h("p", { class: "note", text: "No live worker." }));
    doc.devices.forEach(function (device) { devices.appendChild(deviceCard(device)); });
    replaceRows(document.getElementById("jobs"), doc.jobs.map(function (job) { return jobRow(job, now); }));
    document.getElementById("no-jobs").hidden = doc.jobs.length > 0;
  }

  function setLive(ok, detail) {
    var live = document.getElementById("live");
    live.dataset.state = ok ? "live" : "down";
    live.textContent = ok ? "live · " + new Date().toLocaleTimeString("en-GB") : "no answer (" + detail + "), retrying";
  }

  function tick() {
    fetch(overviewUrl, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (doc) { render(doc); setLive(true); })
      .catch(function (error) { setLive(false, error.message); })
      .then(function () { setTimeout(tick, pollMs); });
  }

  tick();
})();
