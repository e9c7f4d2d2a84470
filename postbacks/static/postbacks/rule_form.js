/* Postback rule form: macro picker, live preview, test button, small field hints.
 * Vanilla JS, no build step. The server renders the macro catalogue and the traffic
 * sources' {var:name} names into the page (json_script); preview and test are admin views
 * that answer JSON. */
(function () {
  "use strict";

  const TEMPLATE_FIELDS = {
    url_template: "postback URL",
    body_template: "body",
    headers_template: "headers",
  };
  const CONVERSION_ROWS = [
    "statuses", "trigger", "conversion_types", "rejection_reasons", "first_only",
  ];

  function $(id) { return document.getElementById(id); }

  function readJson(id, fallback) {
    const node = $(id);
    if (!node) return fallback;
    try { return JSON.parse(node.textContent); } catch (e) { return fallback; }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function humanSeconds(seconds) {
    if (!seconds || seconds < 0) return "no delay";
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]]) {
      const count = Math.floor(seconds / size);
      seconds -= count * size;
      if (count) parts.push(count + " " + unit);
    }
    return parts.slice(0, 2).join(" ");
  }

  /* Watch a field for changes, including the select2 widgets admin autocomplete uses
   * (they fire jQuery events only). */
  function onChange(node, handler) {
    if (!node) return;
    node.addEventListener("change", handler);
    if (window.django && window.django.jQuery) window.django.jQuery(node).on("change", handler);
  }

  function row(name) { return document.querySelector(".form-row.field-" + name); }

  function showRow(name, visible) {
    const node = row(name);
    // A field with an error always stays visible.
    if (node) node.hidden = !visible && !node.classList.contains("errors");
  }

  /* Each kind's fields, labels and signing come from its transport class
   * (postbacks/transports/), rendered by the form on the kind select as data-kinds. */
  function kindsOf(select) {
    try { return JSON.parse((select && select.dataset.kinds) || "{}"); } catch (e) { return {}; }
  }

  function setHelp(name, text) {
    const help = document.getElementById("id_" + name + "_helptext");
    if (!help) return;
    if (help.dataset.original === undefined) help.dataset.original = help.textContent;
    help.textContent = text || help.dataset.original;
  }

  function setLabel(name, text) {
    const label = document.querySelector("label[for=id_" + name + "]");
    if (!label) return;
    if (label.dataset.original === undefined) label.dataset.original = label.textContent;
    label.textContent = text ? text + ":" : label.dataset.original;
  }

  function setupDependentFields(form) {
    const kind = form.elements.kind;
    const method = form.elements.http_method;
    const mode = form.elements.success_mode;
    const eventType = form.elements.event_type;
    const delay = form.elements.delay_seconds;

    const kinds = kindsOf(kind);
    const kindFields = [...new Set(Object.values(kinds).flatMap((k) => k.fields))];
    const labelled = [...new Set(Object.values(kinds).flatMap((k) => Object.keys(k.labels)))];
    const helped = [...new Set(Object.values(kinds).flatMap((k) => Object.keys(k.help || {})))];

    function update() {
      const shape = kind && kinds[kind.value];
      const rows = shape && shape.fields;
      if (shape) {
        kindFields.forEach((name) => showRow(name, rows.includes(name)));
        labelled.forEach((name) => setLabel(name, shape.labels[name]));
        helped.forEach((name) => setHelp(name, (shape.help || {})[name]));
        const signing = document.querySelector("fieldset.pb-signing");
        if (signing) signing.hidden = !shape.signed;
      }
      if (method && (!rows || rows.includes("http_method"))) {
        const post = method.value === "POST";
        showRow("body_format", post);
        showRow("body_template", post);
      }
      if (mode && (!rows || rows.includes("success_mode"))) {
        showRow("success_pattern", mode.value !== "status");
      }
      if (eventType) {
        const conversion = ["conversion", "event"].includes(eventType.value);
        CONVERSION_ROWS.forEach((name) => showRow(name, conversion));
      }
    }
    [kind, method, mode, eventType].forEach((node) => onChange(node, update));
    update();

    if (delay) {
      const hint = el("span", { class: "pb-delay-hint", "aria-live": "polite" });
      delay.after(hint);
      const show = () => {
        const value = parseInt(delay.value, 10);
        hint.textContent = Number.isNaN(value) ? "" : "= " + humanSeconds(value);
      };
      delay.addEventListener("input", show);
      show();
    }
  }

  /* --- macro picker ---------------------------------------------------------------- */

  function setupMacroPicker(form, refreshPreview) {
    const list = $("pb-macro-list");
    const search = $("pb-macro-search");
    const targetLabel = $("pb-macro-target");
    if (!list || !search) return;
    const catalogue = readJson("pb-macro-catalogue", []);
    const sourceVars = readJson("pb-source-vars", {});
    let target = form.elements.url_template;

    Object.keys(TEMPLATE_FIELDS).forEach((name) => {
      const field = form.elements[name];
      if (!field) return;
      field.addEventListener("focus", () => {
        target = field;
        targetLabel.textContent = TEMPLATE_FIELDS[name];
      });
    });

    /* Insert ``text`` at the cursor; ``select`` = [from, to] inside it to leave selected
     * (the "name" of {var:name}, to type over). */
    function insert(text, select) {
      if (!target) return;
      const start = target.selectionStart ?? target.value.length;
      const end = target.selectionEnd ?? target.value.length;
      target.setRangeText(text, start, end, "end");
      target.focus();
      if (select) target.setSelectionRange(start + select[0], start + select[1]);
      target.dispatchEvent(new Event("input", { bubbles: true }));
      refreshPreview();
    }

    function selectedSourceIds() {
      const select = form.elements.traffic_sources;
      if (!select) return [];
      return Array.from(select.selectedOptions || []).map((option) => option.value);
    }

    function varEntries() {
      let ids = selectedSourceIds();
      const scoped = ids.length > 0;
      if (!scoped) ids = Object.keys(sourceVars);
      const names = new Map();
      ids.forEach((id) => {
        const source = sourceVars[id];
        if (!source) return;
        source.vars.forEach((name) => {
          if (!names.has(name)) names.set(name, []);
          names.get(name).push(source.name);
        });
      });
      return Array.from(names.entries()).sort().map(([name, sources]) => ({
        name: "var:" + name,
        group: scoped ? "Custom variables of the chosen traffic sources"
                      : "Custom variables (all traffic sources)",
        description: "Defined by " + sources.join(", ") + ".",
        aliases: [],
        recorded: true,
        deprecated: "",
      }));
    }

    function render() {
      const query = search.value.trim().toLowerCase().replace(/[{}]/g, "");
      const entries = catalogue.concat(varEntries());
      const groups = new Map();
      entries.forEach((macro) => {
        const haystack = [macro.name, ...(macro.aliases || []), macro.description, macro.group]
          .join(" ").toLowerCase();
        if (query && !haystack.includes(query)) return;
        if (!groups.has(macro.group)) groups.set(macro.group, []);
        groups.get(macro.group).push(macro);
      });
      list.replaceChildren();
      if (!groups.size) {
        list.append(el("p", { class: "pb-macro-empty", text: "No macro matches." }));
        return;
      }
      groups.forEach((macros, group) => {
        const items = el("ul", { class: "pb-macro-group-items" });
        macros.forEach((macro) => {
          const placeholder = macro.name === "var:<name>";
          const token = placeholder ? "{var:name}" : "{" + macro.name + "}";
          const notes = [];
          if (macro.recorded === false) notes.push(el("span", { class: "pb-note", text: "(not recorded yet: empty)" }));
          if (macro.deprecated) notes.push(el("span", { class: "pb-note pb-deprecated", text: "deprecated: " + macro.deprecated }));
          const aliases = (macro.aliases || []).length
            ? el("span", { class: "pb-aliases", text: "also " + macro.aliases.map((a) => "{" + a + "}").join(" ") })
            : null;
          const button = el("button", {
            type: "button",
            class: "pb-macro" + (macro.recorded === false ? " pb-unrecorded" : "") + (macro.deprecated ? " pb-is-deprecated" : ""),
            title: "Insert " + token,
            "data-token": token,
          }, el("code", { text: token }), " ", ...notes);
          button.addEventListener("click", () => insert(token, placeholder ? [5, 9] : null));
          items.append(el("li", { role: "listitem" }, button,
            el("span", { class: "pb-macro-desc", text: macro.description }), aliases));
        });
        list.append(el("h3", { class: "pb-macro-group", text: group }), items);
      });
    }

    search.addEventListener("input", render);
    search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {  // never submit the rule form from the search box
        event.preventDefault();
        const first = list.querySelector("button.pb-macro");
        if (first) first.click();
      }
    });
    onChange(form.elements.traffic_sources, render);
    render();
  }

  /* --- preview and test ------------------------------------------------------------ */

  function requestText(request) {
    if (!request) return "";
    const lines = [(request.method || "GET") + " " + (request.url || "")];
    const headers = request.headers || {};
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
    pairs.forEach(([name, value]) => lines.push(name + ": " + value));
    if (request.body) lines.push("", request.body);
    return lines.join("\n");
  }

  function fillList(node, items) {
    node.replaceChildren(...items.map((item) => el("li", { text: item })));
    node.hidden = items.length === 0;
  }

  function messagesOf(data) {
    const errors = (data.errors || []).slice();
    Object.entries(data.field_errors || {}).forEach(([field, messages]) => {
      messages.forEach((message) => errors.push(field + ": " + message));
    });
    return errors;
  }

  function csrfToken(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function setupPreview(form) {
    const panel = $("pb-preview");
    if (!panel) return () => {};
    const previewUrl = panel.dataset.previewUrl;
    const testUrl = panel.dataset.testUrl;
    const conversion = $("pb-conversion");
    const busy = $("pb-busy");
    let timer = null;
    let sequence = 0;

    async function post(url) {
      const data = new FormData(form);
      data.set("_conversion", conversion.value.trim());
      const response = await fetch(url, {
        method: "POST",
        body: data,
        headers: { "X-CSRFToken": csrfToken(form), Accept: "application/json" },
        credentials: "same-origin",
      });
      let body;
      try {
        body = await response.json();
      } catch (e) {
        body = { errors: ["The server answered " + response.status + " without JSON."] };
      }
      return body;
    }

    async function refresh() {
      clearTimeout(timer);
      const mine = ++sequence;
      busy.hidden = false;
      let data;
      try {
        data = await post(previewUrl);
      } catch (e) {
        data = { errors: ["Preview unavailable: " + e.message] };
      }
      if (mine !== sequence) return;  // a newer preview is on its way
      busy.hidden = true;
      $("pb-preview-source").textContent = data.conversion || "";
      fillList($("pb-preview-errors"), messagesOf(data));
      fillList($("pb-preview-warnings"), data.warnings || []);
      $("pb-preview-request").textContent = data.request
        ? requestText(data.request) : "(nothing to show)";
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 400);
    }

    async function sendTest() {
      const destination = (form.elements.url_template || {}).value || "the destination";
      const ok = window.confirm(
        "Send a real test postback now to\n" + destination +
        "\n\nThe traffic source may count it. It is marked as a test in the log.");
      if (!ok) return;
      const button = $("pb-test-send");
      button.disabled = true;
      busy.hidden = false;
      let data;
      try {
        data = await post(testUrl);
      } catch (e) {
        data = { errors: ["The test could not be sent: " + e.message] };
      }
      button.disabled = false;
      busy.hidden = true;
      const result = $("pb-test-result");
      result.hidden = false;
      const response = data.response || {};
      const outcome = $("pb-test-outcome");
      outcome.textContent = response.outcome_label || "not sent";
      outcome.className = "pb-outcome pb-outcome-" + (response.outcome || "none");
      $("pb-test-data").textContent = data.conversion || "";
      $("pb-test-status").textContent = response.status_code ?? "no response";
      $("pb-test-duration").textContent =
        response.duration_ms !== undefined ? response.duration_ms + " ms" : "";
      const errors = messagesOf(data);
      if (response.error) errors.unshift(response.error);
      $("pb-test-error").textContent = errors.join(" ") || "none";
      const link = $("pb-test-delivery");
      if (data.delivery_url) {
        link.href = data.delivery_url;
        link.textContent = "Test delivery #" + data.delivery_id;
        link.parentElement.hidden = false;
      } else {
        link.textContent = "";
      }
      $("pb-test-request").textContent = requestText(data.request) || "(nothing sent)";
      $("pb-test-response").textContent = response.body || "(empty)";
      result.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }

    form.addEventListener("input", (event) => {
      if (event.target !== $("pb-macro-search")) schedule();
    });
    form.addEventListener("change", (event) => {
      if (event.target !== $("pb-macro-search")) schedule();
    });
    onChange(form.elements.traffic_sources, schedule);
    conversion.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {  // preview, never save, from the conversion box
        event.preventDefault();
        refresh();
      }
    });
    $("pb-preview-refresh").addEventListener("click", refresh);
    const testButton = $("pb-test-send");
    if (testButton && testUrl) testButton.addEventListener("click", sendTest);
    refresh();
    return schedule;
  }

  function start() {
    const form = document.getElementById("postbackrule_form");
    if (!form) return;
    setupDependentFields(form);
    const schedulePreview = setupPreview(form);
    setupMacroPicker(form, schedulePreview);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
