// The differential corpora of tests/fixtures/graphql, recomputed with
// graphql-js: the committed expectations (which tests/graphql_validation.rs
// and tests/graphql_projection.rs hold subcar to) must be exactly what the
// pinned graphql-js says now, so they cannot drift from it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as graphql from "graphql";
import { corpus, serialize, committed, PINNED_GRAPHQL } from "../fixtures/graphql/corpus.mjs";

test("graphql-js is pinned to the same exact version here and in tests/fixtures/graphql", () => {
  const ours = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8")).devDependencies.graphql;
  assert.match(PINNED_GRAPHQL, /^\d+\.\d+\.\d+$/, "tests/fixtures/graphql pins an exact version");
  assert.equal(ours, PINNED_GRAPHQL, "tests/js/package.json pins the same graphql as tests/fixtures/graphql");
  assert.equal(graphql.version, PINNED_GRAPHQL, "the installed graphql is the pinned one (npm ci)");
});

const files = corpus(graphql);

test("the corpora are as large as promised", () => {
  assert.ok(files["validation.json"].length >= 300, `${files["validation.json"].length} validation documents`);
  assert.ok(files["projection.json"].length >= 150, `${files["projection.json"].length} projection cases`);
});

for (const [name, value] of Object.entries(files)) {
  test(`${name} is what graphql-js ${graphql.version} computes (regenerate with node tests/fixtures/graphql/generate.mjs)`, () => {
    const expected = JSON.parse(committed(name));
    assert.deepStrictEqual(expected, JSON.parse(serialize(value)));
  });
}
