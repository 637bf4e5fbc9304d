// Meshgate playground. Plain JS, no build step, loaded from static files (the CSP allows
// no inline script). Model output is untrusted: it is only ever set with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("playground-data").textContent);
  const csrfToken = document.querySelector("#composer input[name=csrfmiddlewaretoken]").value;
  const modelsById = new Map(data.models.map((m) => [m.id, m]));
  const MAX_PANES = 3;
  const PLACEHOLDER_KEY = "YOUR_MESHGATE_KEY";

  const state = { panes: [], controller: null };

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(text) {
    $("status").textContent = text || "";
  }

  // The rule of audit.money.usd (which formats every recorded cost the server sends as
  // cost_display): cents, two significant digits below a cent, "$0.00" only for zero.
  function formatCost(value) {
    if (value === null || value === undefined || value === "") return "–";
    const number = Number(value);
    if (!Number.isFinite(number)) return "–";
    const sign = number < 0 ? "-" : "";
    const amount = Math.abs(number);
    if (amount === 0) return "$0.00";
    if (amount >= 0.01) {
      return sign + "$" + amount.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    }
    return sign + "$" + Number(amount.toPrecision(2)).toFixed(Math.min(10, 1 - Math.floor(Math.log10(amount)))).replace(/0+$/, "");
  }

  function runCost(run) {
    return run.cost_display || runCost(run);
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s";
  }

  // --- model picker -------------------------------------------------------------------------

  function describeModel(id) {
    const m = modelsById.get(id);
    if (!m) return "";
    return m.price_text + " · " + m.speed_text + (m.alias && m.targets.length ? " · alias of " + m.targets.join(", ") : "");
  }

  function fillModelSelect(select, selected) {
    for (const m of data.models) {
      const option = make("option", "", m.id + (m.alias ? " (alias)" : ""));
      option.value = m.id;
      select.append(option);
    }
    if (selected) select.value = selected;
  }

  function updateModelInfo() {
    const info = $("model-info");
    if (info) info.textContent = describeModel($("model").value);
    if (state.panes.length) state.panes[0].setModel($("model").value);
  }

  // --- panes: one conversation per model, side by side when comparing -------------------------

  function createPane(modelId) {
    const pane = { model: modelId, messages: [] };
    const root = make("article", "pane");
    const head = make("header", "pane-head");
    const title = make("h3", "pane-model");
    head.append(title);
    if (state.panes.length > 0) {
      const select = make("select", "pane-select");
      select.setAttribute("aria-label", "Model to compare");
      fillModelSelect(select, modelId);
      select.addEventListener("change", () => pane.setModel(select.value));
      const remove = make("button", "link remove-pane", "Remove");
      remove.type = "button";
      remove.addEventListener("click", () => removePane(pane));
      head.append(select, remove);
      title.classList.add("visually-hidden");
    }
    const transcript = make("div", "transcript");
    transcript.setAttribute("aria-live", "polite");
    const stats = make("dl", "stats");
    const figures = {};
    for (const [key, label] of [
      ["tokens", "Tokens"],
      ["cost", "Cost"],
      ["latency", "Latency"],
      ["ttft", "First token"],
    ]) {
      const wrap = make("div", "stat stat-" + key);
      wrap.append(make("dt", "", label));
      figures[key] = make("dd", "", "–");
      wrap.append(figures[key]);
      stats.append(wrap);
    }
    root.append(head, transcript, stats);
    Object.assign(pane, { root, title, transcript, figures });
    pane.setModel = (id) => {
      pane.model = id;
      title.textContent = id;
      root.dataset.model = id;
    };
    pane.setModel(modelId);
    return pane;
  }

  function layoutPanes() {
    const container = $("panes");
    container.dataset.count = String(state.panes.length);
    $("add-pane").disabled = state.panes.length >= MAX_PANES || data.models.length === 0;
  }

  function addPane(modelId) {
    const pane = createPane(modelId);
    state.panes.push(pane);
    $("panes").append(pane.root);
    // A pane added mid-conversation starts from the first pane's turns: the same context.
    if (state.panes.length > 1) {
      for (const m of state.panes[0].messages) {
        pane.messages.push({ ...m });
        addTurn(pane, m.role, m.content);
      }
    }
    layoutPanes();
    return pane;
  }

  function removePane(pane) {
    if (state.controller) return;
    state.panes = state.panes.filter((p) => p !== pane);
    pane.root.remove();
    layoutPanes();
  }

  function resetPanes(modelId) {
    for (const pane of state.panes) pane.root.remove();
    state.panes = [];
    if (modelId) addPane(modelId);
  }

  function addTurn(pane, role, text) {
    const turn = make("div", "turn turn-" + role);
    turn.append(make("div", "role", role === "user" ? "You" : role === "assistant" ? "Assistant" : role));
    const body = make("div", "text", text || "");
    turn.append(body);
    pane.transcript.append(turn);
    pane.transcript.scrollTop = pane.transcript.scrollHeight;
    return { turn, body };
  }

  function settings() {
    const read = (id) => ($(id).value === "" ? null : Number($(id).value));
    return { temperature: read("temperature"), max_tokens: read("max-tokens"), top_p: read("top-p") };
  }

  function conversation(pane) {
    const system = $("system").value.trim();
    return (system ? [{ role: "system", content: system }] : []).concat(pane.messages);
  }

  // --- one streamed answer ----------------------------------------------------------------------

  function parseFrame(frame) {
    const lines = frame.split("\n").filter((line) => line.startsWith("data:"));
    if (!lines.length) return null;
    const payload = lines.map((line) => line.slice(5).trimStart()).join("\n");
    if (payload === "[DONE]") return { done: true };
    try {
      return JSON.parse(payload);
    } catch (_error) {
      return null;
    }
  }

  function estimateCost(modelId, usage) {
    const m = modelsById.get(modelId);
    if (!m || !usage || m.input_price === null || m.output_price === null) return null;
    return ((usage.prompt_tokens || 0) * m.input_price + (usage.completion_tokens || 0) * m.output_price) / 1e6;
  }

  async function recordedRun(requestId) {
    // The gateway completes the audit record in batches just after the stream: wait a little.
    for (let attempt = 0; attempt < 15; attempt++) {
      const response = await fetch(data.urls.runs + encodeURIComponent(requestId) + "/", { credentials: "same-origin" });
      if (response.ok) {
        const run = await response.json();
        if (run.outcome !== "interrupted") return run;
      }
      await new Promise((resolve) => setTimeout(resolve, 200 + attempt * 100));
    }
    return null;
  }

  async function runPane(pane, signal) {
    const { turn, body } = addTurn(pane, "assistant", "");
    turn.classList.add("streaming");
    for (const key in pane.figures) pane.figures[key].textContent = "…";
    const started = performance.now();
    let firstTokenAt = null;
    let usage = null;
    let answer = "";
    let requestId = null;
    let failure = null;
    let stopped = false;
    try {
      const response = await fetch(data.urls.chat, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify({
          model: pane.model,
          department: $("department").value,
          messages: conversation(pane),
          ...settings(),
        }),
        signal,
      });
      requestId = response.headers.get("X-Request-Id");
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        const error = await response.json().catch(() => null);
        throw new Error((error && error.error && error.error.message) || "The gateway answered " + response.status + ".");
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = parseFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!chunk || chunk.done) continue;
          if (chunk.error) throw new Error(chunk.error.message || "The model failed mid-answer.");
          const choice = chunk.choices && chunk.choices[0];
          const piece = choice && choice.delta && choice.delta.content;
          if (piece) {
            if (firstTokenAt === null) firstTokenAt = performance.now();
            answer += piece;
            body.textContent = answer; // text only: never markup from a model
          }
          if (chunk.usage) usage = chunk.usage;
        }
      }
    } catch (error) {
      if (error.name === "AbortError") stopped = true;
      else failure = error.message;
    }
    const ended = performance.now();
    turn.classList.remove("streaming");
    if (answer) pane.messages.push({ role: "assistant", content: answer });
    if (stopped) turn.append(make("div", "note", "Stopped."));
    if (failure) {
      turn.classList.add("failed");
      turn.append(make("div", "note error", failure));
    }
    pane.figures.latency.textContent = formatMs(ended - started);
    pane.figures.ttft.textContent = firstTokenAt === null ? "–" : formatMs(firstTokenAt - started);
    pane.figures.tokens.textContent = usage ? usage.prompt_tokens + " in / " + usage.completion_tokens + " out" : "–";
    const estimate = estimateCost(pane.model, usage);
    pane.figures.cost.textContent = estimate === null ? "–" : "≈ " + formatCost(estimate);
    if (requestId && !failure) {
      // The audit record is what the department is charged: show its figures once written.
      const run = await recordedRun(requestId);
      if (run) {
        pane.figures.cost.textContent = runCost(run);
        pane.figures.tokens.textContent = run.prompt_tokens + " in / " + run.completion_tokens + " out";
        pane.root.dataset.outcome = run.outcome;
        // An alias (or a fallback) says which model actually answered.
        if (run.served_by && run.served_by !== pane.model) turn.append(make("div", "note served-by", "Served by " + run.served_by));
      }
    }
    pane.root.dataset.done = "true";
  }

  function setRunning(running) {
    $("send").disabled = running || data.models.length === 0;
    $("stop").disabled = !running;
    $("prompt").readOnly = running;
    for (const select of document.querySelectorAll(".pane-select, #model, #department")) select.disabled = running || select.options.length === 0;
  }

  async function send(event) {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    if (!state.panes.length) addPane($("model").value);
    const controller = new AbortController();
    state.controller = controller;
    setRunning(true);
    setStatus(state.panes.length > 1 ? "Comparing " + state.panes.length + " models…" : "Streaming…");
    for (const pane of state.panes) {
      delete pane.root.dataset.done;
      pane.messages.push({ role: "user", content: text });
      addTurn(pane, "user", text);
    }
    $("prompt").value = "";
    await Promise.all(state.panes.map((pane) => runPane(pane, controller.signal)));
    state.controller = null;
    setRunning(false);
    setStatus(controller.signal.aborted ? "Stopped." : "");
    refreshRuns();
  }

  // --- copy as code -------------------------------------------------------------------------

  function codeMessages() {
    const pane = state.panes[0];
    const messages = pane ? conversation(pane) : conversation({ messages: [] });
    const pending = $("prompt").value.trim();
    if (pending) messages.push({ role: "user", content: pending });
    if (!messages.some((m) => m.role === "user")) messages.push({ role: "user", content: "Hello!" });
    return messages;
  }

  function pythonSnippet(model, messages, options) {
    // JSON string literals are valid Python string literals.
    const s = (value) => JSON.stringify(value);
    const lines = [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      "client = OpenAI(",
      "    base_url=" + s(window.location.origin + "/v1") + ",",
      "    api_key=os.environ.get(\"MESHGATE_API_KEY\", " + s(PLACEHOLDER_KEY) + "),",
      ")",
      "response = client.chat.completions.create(",
      "    model=" + s(model) + ",",
      "    messages=[",
    ];
    for (const m of messages) lines.push("        {\"role\": " + s(m.role) + ", \"content\": " + s(m.content) + "},");
    lines.push("    ],");
    for (const [name, value] of Object.entries(options)) if (value !== null && Number.isFinite(value)) lines.push("    " + name + "=" + value + ",");
    lines.push(")", "print(response.choices[0].message.content)");
    return lines.join("\n") + "\n";
  }

  function clientLines(module, cls, baseUrl) {
    const s = (value) => JSON.stringify(value);
    return [
      "import os",
      "",
      "from " + module + " import " + cls,
      "",
      "client = " + cls + "(",
      "    base_url=" + s(baseUrl) + ",",
      "    api_key=os.environ.get(\"MESHGATE_API_KEY\", " + s(PLACEHOLDER_KEY) + "),",
      ")",
    ];
  }

  function turnLines(messages) {
    const s = (value) => JSON.stringify(value);
    return messages.map((m) => "        {\"role\": " + s(m.role) + ", \"content\": " + s(m.content) + "},");
  }

  function optionLines(options, names) {
    const lines = [];
    for (const [name, value] of Object.entries(options)) {
      if (value !== null && Number.isFinite(value) && names[name]) lines.push("    " + names[name] + "=" + value + ",");
    }
    return lines;
  }

  // The same conversation through the Responses door: the system prompt as instructions.
  function responsesSnippet(model, messages, options) {
    const s = (value) => JSON.stringify(value);
    const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n");
    const lines = clientLines("openai", "OpenAI", window.location.origin + "/v1");
    lines.push("response = client.responses.create(", "    model=" + s(model) + ",");
    if (system) lines.push("    instructions=" + s(system) + ",");
    lines.push("    input=[", ...turnLines(messages.filter((m) => m.role !== "system")), "    ],");
    lines.push(...optionLines(options, { temperature: "temperature", max_tokens: "max_output_tokens", top_p: "top_p" }));
    lines.push(")", "print(response.output_text)");
    return lines.join("\n") + "\n";
  }

  // And through the Anthropic Messages door: max_tokens is required there.
  function messagesSnippet(model, messages, options) {
    const s = (value) => JSON.stringify(value);
    const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n");
    const lines = clientLines("anthropic", "Anthropic", window.location.origin);
    lines.push("message = client.messages.create(", "    model=" + s(model) + ",");
    lines.push("    max_tokens=" + (Number.isFinite(options.max_tokens) ? options.max_tokens : 1024) + ",");
    if (system) lines.push("    system=" + s(system) + ",");
    lines.push("    messages=[", ...turnLines(messages.filter((m) => m.role !== "system")), "    ],");
    // The anthropic SDK no longer takes temperature or top_p: the model's own sampling.
    lines.push(")", "print(message.content[0].text)");
    return lines.join("\n") + "\n";
  }

  function curlSnippet(model, messages, options) {
    const body = { model, messages };
    for (const [name, value] of Object.entries(options)) if (value !== null && Number.isFinite(value)) body[name] = value;
    const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
    return [
      "curl " + window.location.origin + "/v1/chat/completions \\",
      "  -H \"Authorization: Bearer ${MESHGATE_API_KEY:-" + PLACEHOLDER_KEY + "}\" \\",
      "  -H \"Content-Type: application/json\" \\",
      "  -d '" + json + "'",
    ].join("\n") + "\n";
  }

  function showCode() {
    const model = state.panes.length ? state.panes[0].model : $("model").value;
    const messages = codeMessages();
    $("code-python").textContent = pythonSnippet(model, messages, settings());
    $("code-curl").textContent = curlSnippet(model, messages, settings());
    $("code-responses").textContent = responsesSnippet(model, messages, settings());
    $("code-messages").textContent = messagesSnippet(model, messages, settings());
    $("code-dialog").showModal();
  }

  async function copyFrom(id, button) {
    const text = $(id).textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_error) {
      // No clipboard permission (plain http, old browser): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents($(id));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
  }

  // --- recent runs --------------------------------------------------------------------------

  function renderRuns(runs) {
    const list = $("runs");
    list.replaceChildren();
    $("no-runs").hidden = runs.length > 0;
    for (const run of runs) {
      const item = make("li", "run");
      const button = make("button", "run-open");
      button.type = "button";
      button.dataset.requestId = run.request_id;
      button.append(
        make("span", "run-model", run.model),
        make("span", "run-meta", new Date(run.started_at).toLocaleString() + " · " + run.outcome_label + " · " + runCost(run)),
      );
      button.addEventListener("click", () => reopen(run.request_id));
      item.append(button);
      list.append(item);
    }
  }

  async function refreshRuns() {
    const response = await fetch(data.urls.runs, { credentials: "same-origin" });
    if (response.ok) renderRuns((await response.json()).runs);
  }

  async function reopen(requestId) {
    if (state.controller) return;
    const response = await fetch(data.urls.runs + encodeURIComponent(requestId) + "/", { credentials: "same-origin" });
    if (!response.ok) return setStatus("That run could not be opened.");
    const run = await response.json();
    if (!run.bodies_kept) return setStatus("This run's connection keeps no message bodies, so it cannot be reopened.");
    const usable = modelsById.has(run.model);
    if (usable) $("model").value = run.model;
    updateModelInfo();
    resetPanes($("model").value);
    const pane = state.panes[0];
    const system = run.messages.find((m) => m.role === "system");
    $("system").value = system ? system.content : "";
    for (const m of run.messages.filter((m) => m.role !== "system")) {
      pane.messages.push(m);
      addTurn(pane, m.role, m.content);
    }
    if (run.answer) {
      pane.messages.push({ role: "assistant", content: run.answer });
      addTurn(pane, "assistant", run.answer);
    }
    if (run.settings.temperature !== undefined) $("temperature").value = run.settings.temperature;
    if (run.settings.max_tokens !== undefined) $("max-tokens").value = run.settings.max_tokens;
    if (run.settings.top_p !== undefined) $("top-p").value = run.settings.top_p;
    pane.figures.tokens.textContent = run.prompt_tokens + " in / " + run.completion_tokens + " out";
    pane.figures.cost.textContent = runCost(run);
    pane.figures.latency.textContent = formatMs(run.latency_ms);
    pane.figures.ttft.textContent = formatMs(run.ttft_ms);
    setStatus(usable ? "Reopened a run of " + run.model + "." : "Reopened a run of " + run.model + ", which you can no longer use: pick another model to continue.");
  }

  // --- wiring ---------------------------------------------------------------------------------

  $("model").addEventListener("change", updateModelInfo);
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("composer").requestSubmit();
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("add-pane").addEventListener("click", () => {
    if (state.controller || state.panes.length >= MAX_PANES) return;
    if (!state.panes.length) addPane($("model").value);
    const taken = new Set(state.panes.map((p) => p.model));
    const next = data.models.find((m) => !taken.has(m.id)) || data.models[0];
    addPane(next.id);
  });
  $("clear").addEventListener("click", () => {
    if (state.controller) return;
    const count = state.panes.length;
    const models = state.panes.map((p) => p.model);
    resetPanes(null);
    for (let i = 0; i < Math.max(count, 1); i++) if (data.models.length) addPane(models[i] || $("model").value);
    setStatus("");
  });
  $("copy-code").addEventListener("click", showCode);
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", () => copyFrom(button.dataset.copy, button));
  }

  renderRuns(data.recent_runs);
  if (data.models.length) {
    updateModelInfo();
    addPane($("model").value);
  }
  layoutPanes();
  document.body.dataset.ready = "true";
})();
