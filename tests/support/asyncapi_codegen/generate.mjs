#!/usr/bin/env node
// Validate an AsyncAPI document with @asyncapi/parser, then generate TypeScript and Go models
// from it with Modelina, print a JSON summary of the models on stdout and (optionally) write
// the generated sources into an output directory.
//
//   node generate.mjs [--plain] [--skip-channel-unions] <asyncapi.json|yaml> [<out-dir>]
//
// Modelina 5.10.1 only takes AsyncAPI up to 3.0.0: handed a 3.1.0 document it silently treats
// it as a plain JSON Schema and makes one `any` model. So a 3.x document newer than Modelina
// knows is validated as it is, then handed to Modelina re-parsed as 3.0.0 (a warning says so).
// Modelina also makes, for every channel operation with more than one message, a union model
// named after the channel id (`orders` -> Orders); they are marked channelUnion in the summary
// and --skip-channel-unions leaves them out (files and summary).
//
// By default the generators are set up so that the models match the JSON on the wire: TS
// interfaces keep the raw (snake_case) property names, Go structs get json tags, and the
// catch-all `additionalProperties` field (pydantic's extra="ignore" leaves additionalProperties
// open) is not generated. --plain uses Modelina's defaults instead (camelCase TS properties,
// no Go json tags, an additionalProperties map on every object).
// Environment: TS_MODEL_TYPE=interface|class (default interface), GO_PACKAGE (default events).
// Exit codes: 0 ok, 1 the parser reported errors (or gave no document), 2 usage,
//             3 Modelina failed or made no object model.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { Parser, fromFile } from '@asyncapi/parser';
import {
  TypeScriptGenerator,
  GoGenerator,
  GO_COMMON_PRESET,
  TS_COMMON_PRESET,
  AsyncAPIInputProcessor,
  ConstrainedObjectModel,
  ConstrainedEnumModel,
  ConstrainedUnionModel,
  ConstrainedArrayModel,
  ConstrainedDictionaryModel,
  ConstrainedTupleModel,
  ConstrainedReferenceModel,
  ConstrainedStringModel,
  ConstrainedIntegerModel,
  ConstrainedFloatModel,
  ConstrainedBooleanModel,
  ConstrainedAnyModel,
} from '@asyncapi/modelina';

const require = createRequire(import.meta.url);
const SEVERITY = ['error', 'warning', 'information', 'hint']; // @stoplight/types DiagnosticSeverity

const args = process.argv.slice(2);
const plain = args.includes('--plain');
const skipChannelUnions = args.includes('--skip-channel-unions');
const [docArg, outArg] = args.filter((a) => !a.startsWith('--'));
if (!docArg) {
  process.stderr.write(
    'usage: node generate.mjs [--plain] [--skip-channel-unions] <asyncapi document> [<output dir>]\n',
  );
  process.exit(2);
}
const docPath = resolve(docArg);

// --- 1. validate -------------------------------------------------------------------------
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, docPath).parse();
const diag = diagnostics.map((d) => ({
  severity: SEVERITY[d.severity] ?? String(d.severity),
  code: d.code,
  message: d.message,
  path: (d.path ?? []).join('/'),
}));
for (const d of diag.filter((x) => x.severity === 'error' || x.severity === 'warning')) {
  process.stderr.write(`${d.severity}: [${d.code}] ${d.message} at /${d.path}\n`);
}
const errors = diag.filter((d) => d.severity === 'error');
if (errors.length || !document) {
  process.stderr.write(`${errors.length} error(s); the document is not valid AsyncAPI\n`);
  process.stdout.write(JSON.stringify({ document: docPath, valid: false, diagnostics: diag }, null, 2) + '\n');
  process.exit(1);
}

// --- 2. generate -------------------------------------------------------------------------
const modelinaVersions = AsyncAPIInputProcessor.supportedVersions;
let modelinaDocument = document;
let modelinaInputVersion = document.version();
if (!modelinaVersions.includes(document.version())) {
  const newest3 = modelinaVersions.filter((v) => v.startsWith('3.')).pop();
  if (!document.version().startsWith('3.') || !newest3) {
    process.stderr.write(`Modelina takes AsyncAPI ${modelinaVersions.join(', ')}, not ${document.version()}\n`);
    process.exit(3);
  }
  process.stderr.write(
    `warning: Modelina takes AsyncAPI up to ${newest3}; generating from the document re-parsed as ${newest3}\n`,
  );
  const raw = JSON.parse(readFileSync(docPath, 'utf8')); // JSON documents only, for this path
  raw.asyncapi = newest3;
  const again = await parser.parse(raw, { source: docPath });
  if (!again.document) {
    process.stderr.write(`the document is not valid AsyncAPI ${newest3}\n`);
    process.exit(3);
  }
  modelinaDocument = again.document;
  modelinaInputVersion = newest3;
}
const channelIds = new Set(document.channels().all().map((c) => c.id()));

function kindOf(model) {
  const kinds = [
    [ConstrainedObjectModel, 'object'],
    [ConstrainedEnumModel, 'enum'],
    [ConstrainedUnionModel, 'union'],
    [ConstrainedArrayModel, 'array'],
    [ConstrainedDictionaryModel, 'dictionary'],
    [ConstrainedTupleModel, 'tuple'],
    [ConstrainedReferenceModel, 'reference'],
    [ConstrainedStringModel, 'string'],
    [ConstrainedIntegerModel, 'integer'],
    [ConstrainedFloatModel, 'float'],
    [ConstrainedBooleanModel, 'boolean'],
    [ConstrainedAnyModel, 'any'],
  ];
  return (kinds.find(([cls]) => model instanceof cls) ?? [null, model?.constructor?.name])[1];
}

// Where Modelina took the name from (its interpretName: title, then $id, then
// x-modelgen-inferred-name, which the AsyncAPI processor sets from the parser's schema id).
function nameSource(model) {
  const o = model.originalInput;
  if (!o || typeof o !== 'object') return null;
  if (o.title) return { from: 'title', value: o.title };
  if (o.$id) return { from: '$id', value: o.$id };
  if (o['x-modelgen-inferred-name']) return { from: 'x-modelgen-inferred-name', value: o['x-modelgen-inferred-name'] };
  return null;
}

function describe(output) {
  const model = output.model;
  const from = nameSource(model);
  const entry = {
    name: output.modelName,
    kind: kindOf(model),
    anonymous: /anonym/i.test(output.modelName) || !output.modelName,
    channelUnion: model instanceof ConstrainedUnionModel && from?.from === '$id' && channelIds.has(from.value),
    nameFrom: from,
  };
  if (model instanceof ConstrainedObjectModel) {
    entry.properties = Object.values(model.properties).map((p) => ({
      name: p.propertyName,
      originalName: p.unconstrainedPropertyName,
      required: p.required,
      kind: kindOf(p.property),
      type: p.property.type,
    }));
  } else if (model instanceof ConstrainedEnumModel) {
    entry.values = model.values.map((v) => ({ key: v.key, value: v.value }));
  } else if (model instanceof ConstrainedUnionModel) {
    entry.union = model.union.map((m) => ({ name: m.name, kind: kindOf(m), type: m.type }));
    const anonymousMembers = entry.union.filter((m) => /anonym/i.test(m.name)).map((m) => m.name);
    if (anonymousMembers.length) entry.anonymousMembers = anonymousMembers;
  } else {
    entry.type = model.type;
  }
  return entry;
}

const tsModelType = process.env.TS_MODEL_TYPE || 'interface';
const wire = plain
  ? {}
  : { processorOptions: { interpreter: { ignoreAdditionalProperties: true } } };
const languages = [
  {
    language: 'typescript',
    ext: 'ts',
    generator: new TypeScriptGenerator({
      modelType: tsModelType,
      ...(plain
        ? {}
        : {
            ...wire,
            enumType: 'union',
            mapType: 'indexedObject',
            rawPropertyNames: true, // honoured for interfaces only
            presets:
              tsModelType === 'class'
                ? [{ preset: TS_COMMON_PRESET, options: { marshalling: true } }]
                : [],
          }),
    }),
    completeOptions: { exportType: 'named' },
  },
  {
    language: 'go',
    ext: 'go',
    generator: new GoGenerator(
      plain ? {} : { ...wire, presets: [{ preset: GO_COMMON_PRESET, options: { addJsonTag: true } }] },
    ),
    completeOptions: { packageName: process.env.GO_PACKAGE || 'events' },
  },
];

const summary = {
  document: docPath,
  asyncapi: document.version(),
  modelinaInputVersion,
  valid: true,
  profile: plain ? 'plain' : 'wire',
  diagnostics: diag,
  versions: {
    modelina: require('@asyncapi/modelina/package.json').version,
    parser: require('@asyncapi/parser/package.json').version,
  },
};
for (const { language, ext, generator, completeOptions } of languages) {
  let outputs;
  const started = performance.now();
  try {
    outputs = await generator.generateCompleteModels(modelinaDocument, completeOptions);
  } catch (err) {
    process.stderr.write(`Modelina (${language}) failed: ${err.message}\n`);
    if (err.diagnostics) process.stderr.write(JSON.stringify(err.diagnostics, null, 2) + '\n');
    process.exit(3);
  }
  const millis = Math.round(performance.now() - started);
  let models = outputs.map((o) => [o, describe(o)]);
  if (skipChannelUnions) models = models.filter(([, d]) => !d.channelUnion);
  outputs = models.map(([o]) => o);
  summary[language] = { millis, models: models.map(([, d]) => d) };
  if (!summary[language].models.some((m) => m.kind === 'object')) {
    process.stderr.write(`Modelina (${language}) made no object model: is this input what it takes?\n`);
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    process.exit(3);
  }
  if (outArg) {
    const dir = join(resolve(outArg), language);
    mkdirSync(dir, { recursive: true });
    for (const o of outputs) writeFileSync(join(dir, `${o.modelName}.${ext}`), o.result + '\n');
  }
}
process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
