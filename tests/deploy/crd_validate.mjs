// Validates custom resources against the schemas of the @kubernetes-models npm packages
// (generated from the projects' own API types). Usage:
//   node crd_validate.mjs <node_modules dir>  < objects.json
// stdin: a JSON array of objects; stdout: a JSON array, per object, of null (valid) or the
// validation error. An object whose apiVersion/kind has no known schema is an error too.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const PACKAGES = {
  "argoproj.io": "@kubernetes-models/argo-cd",
  "external-secrets.io": "@kubernetes-models/external-secrets",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = String(obj.apiVersion ?? "").split("/");
  const pkg = PACKAGES[group];
  const file = pkg && join(modules, pkg, group, version ?? "", `${obj.kind}.js`);
  if (!file || !existsSync(file)) {
    results.push(`no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`);
    continue;
  }
  const Model = (await import(pathToFileURL(file).href))[obj.kind];
  try {
    new Model(obj).validate();
    results.push(null);
  } catch (err) {
    results.push(String(err.message ?? err));
  }
}
process.stdout.write(JSON.stringify(results));
