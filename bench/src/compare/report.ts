#!/usr/bin/env node
// node bench/dist/compare/report.js [--md FILE] [--svg-dir DIR] <result.json…>
//
// Turns comparison results (bench/results/*.json written by bench:compare) into the
// Markdown sections of benchmark.md — one table per scenario with every broker (and both
// generators when both were run), the exact commands, the machine and the date — and
// one SVG chart per result. With several results for the same scenario and generator
// the newest is used (the others are named on stderr).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { renderReport } from './render.js';
import { renderSvg } from './svg.js';
import type { CompareResult } from './types.js';

const USAGE = `Usage: node bench/dist/compare/report.js [--md FILE] [--svg-dir DIR] [--heading '###'] <result.json…>

Prints the Markdown sections for benchmark.md (or writes them to --md FILE) and writes
one SVG chart per result into --svg-dir (default: next to each result file).
`;

export function loadResult(path: string): CompareResult {
  const r = JSON.parse(readFileSync(path, 'utf8')) as CompareResult;
  if (r.kind !== 'fleetmq-bench-compare') throw new Error(`${path}: not a bench:compare result (kind ${String(r.kind)})`);
  return r;
}

export function main(argv: string[]): number {
  let md: string | null = null;
  let svgDir: string | null = null;
  let heading = '###';
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    }
    if (a === '--md' || a === '--svg-dir' || a === '--heading') {
      const v = argv[++i];
      if (v === undefined) {
        process.stderr.write(`report: ${a}: missing value\n`);
        return 2;
      }
      if (a === '--md') md = resolve(v);
      else if (a === '--svg-dir') svgDir = resolve(v);
      else heading = v;
    } else if (a.startsWith('--')) {
      process.stderr.write(`report: unknown flag ${a}\n\n${USAGE}`);
      return 2;
    } else files.push(resolve(a));
  }
  if (files.length === 0) {
    process.stderr.write(`report: no result files given\n\n${USAGE}`);
    return 2;
  }
  const newest = new Map<string, { r: CompareResult; file: string }>();
  for (const f of files) {
    const r = loadResult(f);
    const key = `${r.scenario}\u0000${r.generator}`;
    const prev = newest.get(key);
    if (!prev || prev.r.started_at < r.started_at) {
      if (prev) process.stderr.write(`report: ${relative(process.cwd(), prev.file)} left out (newer: ${relative(process.cwd(), f)})\n`);
      newest.set(key, { r, file: f });
    } else process.stderr.write(`report: ${relative(process.cwd(), f)} left out (newer: ${relative(process.cwd(), prev.file)})\n`);
  }
  const charts = new Map<CompareResult, string>();
  const base = md ? dirname(md) : process.cwd();
  for (const { r, file } of newest.values()) {
    const dir = svgDir ?? dirname(file);
    mkdirSync(dir, { recursive: true });
    const svg = join(dir, basename(file).replace(/\.json$/, '') + '.svg');
    writeFileSync(svg, renderSvg(r));
    charts.set(r, relative(base, svg));
  }
  const text = renderReport([...newest.values()].map((x) => x.r), { charts, heading });
  if (md) {
    mkdirSync(dirname(md), { recursive: true });
    writeFileSync(md, text);
    process.stderr.write(`report: wrote ${relative(process.cwd(), md)}\n`);
  } else process.stdout.write(text);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`report: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}
