// The API reference at /docs (pushd/api/docs_page.py): GET /api/openapi.json rendered
// as operations grouped by tag, with their roles, parameters, request and response
// schemas. The document needs an API key; the page shares the console's (sessionStorage).
"use strict";

const KEY_STORAGE = "pushd-key";
const MAX_DEPTH = 6;
let documentRoot = null;

function $(id) { return document.getElementById(id); }

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function resolve(schema) {
  if (!schema || !schema.$ref) return [schema || {}, null];
  const name = schema.$ref.split("/").pop();
  return [documentRoot.components.schemas[name] || {}, name];
}

// A schema as an indented, TypeScript-like text: `{ field: type, optional?: type }`.
function describe(schema, depth = 0, seen = new Set()) {
  const [resolved, name] = resolve(schema);
  if (name && (seen.has(name) || depth >= MAX_DEPTH)) return name;
  const inner = name ? new Set([...seen, name]) : seen;
  const pad = "  ".repeat(depth + 1), end = "  ".repeat(depth);
  for (const union of ["oneOf", "anyOf"]) {
    if (resolved[union]) return resolved[union].map(part => describe(part, depth, inner)).join(" | ");
  }
  if (resolved.enum) return resolved.enum.map(value => JSON.stringify(value)).join(" | ");
  if (resolved.type === "array") return describe(resolved.items, depth, inner) + "[]";
  if (resolved.type === "object" || resolved.properties) {
    const properties = Object.entries(resolved.properties || {});
    const extra = resolved.additionalProperties;
    if (!properties.length) {
      return extra && extra !== true ? `{ [key]: ${describe(extra, depth, inner)} }` : "object";
    }
    const required = new Set(resolved.required || []);
    const lines = properties.map(([field, property]) => {
      const note = property.description ? `  // ${property.description.split("\n")[0]}` : "";
      return `${pad}${field}${required.has(field) ? "" : "?"}: ${describe(property, depth + 1, inner)}${note}`;
    });
    return `${name ? name + " " : ""}{\n${lines.join("\n")}\n${end}}`;
  }
  const format = resolved.format ? ` (${resolved.format})` : "";
  return (Array.isArray(resolved.type) ? resolved.type.join(" | ") : resolved.type || "any") + format;
}

function schemaBlock(content) {
  const block = element("div");
  for (const [mediaType, { schema }] of Object.entries(content || {})) {
    block.append(element("div", "muted", mediaType), element("pre", "", describe(schema)));
  }
  return block;
}

function parameters(operation) {
  const table = element("table");
  const head = element("tr");
  for (const title of ["parameter", "in", "required", "type", "description"]) head.append(element("th", "", title));
  table.append(head);
  for (const parameter of operation.parameters) {
    const row = element("tr");
    for (const text of [parameter.name, parameter.in, parameter.required ? "yes" : "no",
      describe(parameter.schema), parameter.description || ""]) {
      row.append(element("td", "", text));
    }
    table.append(row);
  }
  return table;
}

function operationView(method, path, operation) {
  const view = element("details", "op");
  view.dataset.operation = `${method.toUpperCase()} ${path}`;
  const summary = element("summary");
  summary.append(element("span", "method", method.toUpperCase()), element("span", "path", path),
    element("span", "muted", "  " + (operation.summary || "").split(". ")[0]));
  const body = element("div", "body");
  body.append(element("p", "", operation.summary || ""));
  if (operation.description) body.append(element("p", "", operation.description));
  const publicRoute = Array.isArray(operation.security) && operation.security.length === 0;
  body.append(element("p", "muted", publicRoute ? "No API key needed." :
    "API key roles: " + (operation["x-roles"] || []).join(", ")));
  if (operation.parameters && operation.parameters.length) body.append(element("h3", "", "Parameters"), parameters(operation));
  if (operation.requestBody) {
    body.append(element("h3", "", "Request body" + (operation.requestBody.required ? "" : " (optional)")),
      schemaBlock(operation.requestBody.content));
  }
  body.append(element("h3", "", "Responses"));
  for (const [status, response] of Object.entries(operation.responses || {}).sort()) {
    body.append(element("p", "", `${status}: ${response.description || ""}`), schemaBlock(response.content));
  }
  view.append(summary, body);
  return view;
}

function render() {
  const byTag = new Map();
  for (const [path, operations] of Object.entries(documentRoot.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const tag = (operation.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(method, path, operation));
    }
  }
  const sections = [...byTag.entries()].map(([tag, views]) => {
    const section = element("section");
    section.dataset.tag = tag;
    section.append(element("h2", "", tag), ...views);
    return section;
  });
  $("reference").replaceChildren(...sections);
  $("version").textContent = `${documentRoot.info.title} ${documentRoot.info.version}`;
}

function applyFilter() {
  const words = $("filter").value.toLowerCase().trim();
  for (const section of $("reference").children) {
    let shown = 0;
    for (const view of section.querySelectorAll(".op")) {
      view.hidden = Boolean(words) && !(section.dataset.tag + " " + view.textContent).toLowerCase().includes(words);
      if (!view.hidden) shown += 1;
    }
    section.hidden = shown === 0;
  }
}

async function load() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) return;
  try {
    const response = await fetch("/api/openapi.json", { headers: { Authorization: "Bearer " + key } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    documentRoot = body;
    $("error").textContent = "";
    render();
    applyFilter();
  } catch (error) {
    $("error").textContent = "Cannot read /api/openapi.json: " + error.message;
  }
}

$("login").addEventListener("submit", event => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  load();
});
$("filter").addEventListener("input", applyFilter);
load();
// The page is ready for input (tests wait for it: a click before this would submit the form).
document.documentElement.dataset.ready = "true";
