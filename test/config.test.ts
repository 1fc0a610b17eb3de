import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';

import { DEFAULTS, defaultMaxConnections, openFileLimit } from '../src/config/defaults.js';
import {
  ConfigError,
  OPTIONS,
  checkValue,
  envName,
  loadConfig,
  renderOptionsMarkdown,
  type LoadOptions,
  type OptionSpec,
} from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = new URL('../../', import.meta.url); // dist/test/ -> repo root
const tmp = tempDir('fleetmq-config-');
let n = 0;

function tmpFile(content: string, name = `f${n++}.json`): string {
  const p = tmp.file(name);
  writeFileSync(p, content);
  return p;
}

/** Loads with a JSON config file holding `doc`, an explicit env and no flags. */
function loadDoc(doc: unknown, env: NodeJS.ProcessEnv = {}, extra: Partial<LoadOptions> = {}): Config {
  return loadConfig({ argv: {}, env, file: tmpFile(JSON.stringify(doc)), ...extra });
}

/** The ConfigError thrown by fn (fails when nothing or something else is thrown). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.equal(e.code, 'FLEETMQ_CONFIG');
    return e;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

/** Builds {a: {b: {c: value}}} from "a.b.c". */
function nest(path: string, value: unknown): Record<string, unknown> {
  return path
    .split('.')
    .reverse()
    .reduce<unknown>((acc, k) => ({ [k]: acc }), value) as Record<string, unknown>;
}

function leafPaths(o: unknown, prefix = ''): string[] {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return [prefix];
  return Object.entries(o).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
}

describe('defaults', () => {
  test('the option table covers exactly the fields of Config', () => {
    assert.deepEqual(OPTIONS.map((o) => o.path).sort(), leafPaths(DEFAULTS).sort());
  });

  test('every embedded default passes its own option check', () => {
    for (const o of OPTIONS) {
      const v = o.path.split('.').reduce<unknown>((acc, k) => (acc as Record<string, unknown>)[k], DEFAULTS);
      assert.equal(checkValue(o, v), null, o.path);
    }
  });

  test('loading with nothing gives the defaults; TLS listeners are off without a certificate', () => {
    const warnings: string[] = [];
    const cfg = loadConfig({ argv: {}, env: {}, onWarning: (w) => warnings.push(w) });
    const expected = structuredClone(DEFAULTS) as Config;
    expected.listeners.mqtts_port = 0;
    expected.listeners.wss_port = 0;
    assert.deepEqual(cfg, expected);
    assert.deepEqual(warnings, [], 'default TLS ports are silently disabled');
  });

  test('documented default values', () => {
    const d = DEFAULTS;
    assert.match(d.node.name, /^fleetmq@.+/);
    assert.equal(d.node.data_dir, './data');
    assert.equal(d.node.shutdown_timeout_ms, 5000);
    assert.equal(d.log.level, 'info');
    assert.deepEqual(
      [d.listeners.bind, d.listeners.mqtt_port, d.listeners.mqtts_port, d.listeners.ws_port, d.listeners.wss_port, d.listeners.ws_path, d.listeners.http_port],
      ['0.0.0.0', 1883, 8883, 8083, 8084, '/mqtt', 18083],
    );
    assert.deepEqual(d.listeners.tls, { cert: null, key: null, ca: null, request_cert: false, cn_as_username: false });
    assert.equal(d.mqtt.max_packet_size, 1048576);
    assert.equal(d.mqtt.max_session_expiry, 0xffffffff);
    assert.equal(d.mqtt.max_write_buffer, 4 * 1024 * 1024);
    assert.equal(d.mqtt.queue_overflow, 'drop_oldest');
    assert.equal(d.auth.allow_anonymous, true);
    assert.equal(d.auth.acl_default, 'allow');
  });

  test('max_connections = open-file soft limit - 256, at least 64', () => {
    const shell = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(shell)) assert.equal(openFileLimit(), shell);
    assert.equal(DEFAULTS.node.max_connections, Math.max(64, openFileLimit() - 256));
    assert.equal(defaultMaxConnections(20000), 19744);
    assert.equal(defaultMaxConnections(300), 64);
  });

  test('DEFAULTS is frozen and loads do not share objects', () => {
    assert.throws(() => {
      (DEFAULTS.listeners as { mqtt_port: number }).mqtt_port = 1;
    }, TypeError);
    const a = loadConfig({ argv: {}, env: {} });
    a.mqtt.deny_subscribe.push('x/y');
    a.listeners.tls.request_cert = true;
    const b = loadConfig({ argv: {}, env: {} });
    assert.deepEqual(b.mqtt.deny_subscribe, []);
    assert.equal(b.listeners.tls.request_cert, false);
  });
});

describe('precedence: defaults < file < env < CLI', () => {
  test('each layer overrides the one below, option by option', () => {
    const file = tmpFile(JSON.stringify({ listeners: { mqtt_port: 1001, ws_port: 1002, http_port: 1003 }, log: { level: 'warn' } }));
    const cfg = loadConfig({
      argv: { config: file, httpPort: 3003 },
      env: { FLEETMQ_LISTENERS__WS_PORT: '2002', FLEETMQ_LISTENERS__HTTP_PORT: '2003' },
    });
    assert.equal(cfg.listeners.mqtt_port, 1001); // file
    assert.equal(cfg.listeners.ws_port, 2002); // env over file
    assert.equal(cfg.listeners.http_port, 3003); // CLI over env
    assert.equal(cfg.log.level, 'warn'); // file
    assert.equal(cfg.mqtt.max_packet_size, DEFAULTS.mqtt.max_packet_size); // default
  });

  test('every CLI flag sets its option', () => {
    const cfg = loadConfig({
      argv: { nodeName: 'n1', bind: '127.0.0.1', mqttPort: 1, mqttsPort: 2, wsPort: 3, wssPort: 4, httpPort: 5, dataDir: '/tmp/d', logLevel: 'debug' },
      env: {},
    });
    assert.equal(cfg.node.name, 'n1');
    assert.equal(cfg.listeners.bind, '127.0.0.1');
    assert.deepEqual([cfg.listeners.mqtt_port, cfg.listeners.ws_port, cfg.listeners.http_port], [1, 3, 5]);
    assert.deepEqual([cfg.listeners.mqtts_port, cfg.listeners.wss_port], [0, 0], 'no certificate');
    assert.equal(cfg.node.data_dir, '/tmp/d');
    assert.equal(cfg.log.level, 'debug');
  });

  test('config file location: opts.file > --config > FLEETMQ_CONFIG', () => {
    const a = tmpFile('{"listeners":{"mqtt_port":11}}');
    const b = tmpFile('{"listeners":{"mqtt_port":12}}');
    const c = tmpFile('{"listeners":{"mqtt_port":13}}');
    assert.equal(loadConfig({ argv: {}, env: { FLEETMQ_CONFIG: c } }).listeners.mqtt_port, 13);
    assert.equal(loadConfig({ argv: { config: b }, env: { FLEETMQ_CONFIG: c } }).listeners.mqtt_port, 12);
    assert.equal(loadConfig({ argv: { config: b }, env: { FLEETMQ_CONFIG: c }, file: a }).listeners.mqtt_port, 11);
  });

  test('environment values: numbers, booleans, lists, nested TLS keys, null files', () => {
    const cert = tmpFile('cert', 'env-cert.pem');
    const key = tmpFile('key', 'env-key.pem');
    const cfg = loadConfig({
      argv: {},
      env: {
        FLEETMQ_MQTT__MAX_PACKET_SIZE: '65536',
        FLEETMQ_MQTT__RETAIN_AVAILABLE: 'false',
        FLEETMQ_MQTT__DENY_SUBSCRIBE: 'a/b, c/d,,#',
        FLEETMQ_LISTENERS__TLS__CERT: cert,
        FLEETMQ_LISTENERS__TLS__KEY: key,
        FLEETMQ_AUTH__ACL_FILE: '',
        FLEETMQ_LOG__LEVEL: 'error',
        FLEETMQ_UNRELATED_THING: 'ignored',
        PATH: '/usr/bin',
      },
    });
    assert.equal(cfg.mqtt.max_packet_size, 65536);
    assert.equal(cfg.mqtt.retain_available, false);
    assert.deepEqual(cfg.mqtt.deny_subscribe, ['a/b', 'c/d', '#']);
    assert.equal(cfg.listeners.tls.cert, cert);
    assert.equal(cfg.listeners.tls.key, key);
    assert.equal(cfg.listeners.mqtts_port, 8883, 'TLS listeners stay on with cert + key');
    assert.equal(cfg.listeners.wss_port, 8084);
    assert.equal(cfg.auth.acl_file, null);
    assert.equal(cfg.log.level, 'error');
  });

  test('env names are derived from option paths', () => {
    assert.equal(envName('listeners.tls.cert'), 'FLEETMQ_LISTENERS__TLS__CERT');
    assert.equal(envName('mqtt.max_packet_size'), 'FLEETMQ_MQTT__MAX_PACKET_SIZE');
  });
});

describe('bad options name the option and the value', () => {
  /** A value of the wrong type for each kind of option. */
  function wrongValue(o: OptionSpec): unknown {
    switch (o.type.kind) {
      case 'int':
        return 'abc';
      case 'bool':
        return 'yes';
      case 'enum':
        return 'bogus';
      case 'string':
        return 42;
      case 'file':
        return 42;
      case 'list':
        return 'not-a-list';
      case 'optString':
        return 42;
    }
  }

  for (const o of OPTIONS) {
    test(`${o.path}: wrong type in the file`, () => {
      const bad = wrongValue(o);
      const e = configError(() => loadDoc(nest(o.path, bad)));
      assert.ok(e.message.includes(`option "${o.path}"`), e.message);
      assert.ok(e.message.includes(`got ${JSON.stringify(bad)}`), e.message);
    });
    if (o.type.kind === 'int') {
      const { min, max } = o.type;
      test(`${o.path}: out of range ${min - 1} / ${max + 1} / fraction`, () => {
        for (const bad of [min - 1, max + 1, min + 0.5]) {
          const e = configError(() => loadDoc(nest(o.path, bad)));
          assert.ok(e.message.includes(`option "${o.path}": expected an integer ${min}..${max}, got ${bad}`), e.message);
        }
      });
    }
  }

  test('the example message from the brief', () => {
    const e = configError(() => loadDoc({ listeners: { mqtt_port: 'abc' } }));
    assert.match(e.message, /^option "listeners\.mqtt_port": expected an integer 0\.\.65535, got "abc" \(in config file .+\)$/);
  });

  test('documented ranges', () => {
    const range = (p: string): string => {
      const t = OPTIONS.find((o) => o.path === p)?.type;
      assert.ok(t && t.kind === 'int', p);
      return `${t.min}..${t.max}`;
    };
    assert.equal(range('mqtt.max_packet_size'), '2..268435455');
    assert.equal(range('mqtt.receive_maximum'), '1..65535');
    assert.equal(range('mqtt.max_topic_alias'), '0..65535');
    assert.equal(range('mqtt.max_qos'), '0..2');
    assert.equal(range('mqtt.max_session_expiry'), '0..4294967295');
    for (const p of ['mqtt_port', 'mqtts_port', 'ws_port', 'wss_port', 'http_port']) assert.equal(range(`listeners.${p}`), '0..65535');
  });

  test('enums list the allowed values', () => {
    const e = configError(() => loadDoc({ log: { level: 'verbose' } }));
    assert.ok(e.message.includes('option "log.level": expected one of "debug", "info", "warn", "error", got "verbose"'), e.message);
    const e2 = configError(() => loadDoc({ mqtt: { shared_strategy: 'first' } }));
    assert.ok(e2.message.includes('"round_robin", "random", "sticky", "hash_clientid", "hash_topic"'), e2.message);
  });

  test('numbers given as JSON strings are refused in the file', () => {
    const e = configError(() => loadDoc({ mqtt: { max_packet_size: '65536' } }));
    assert.ok(e.message.includes('option "mqtt.max_packet_size": expected an integer 2..268435455, got "65536"'), e.message);
  });

  test('bad environment values name the option, value and variable', () => {
    const e = configError(() => loadConfig({ argv: {}, env: { FLEETMQ_MQTT__MAX_PACKET_SIZE: 'big', FLEETMQ_MQTT__QUEUE_QOS0: 'yes' } }));
    assert.ok(e.message.includes('option "mqtt.max_packet_size": expected an integer 2..268435455, got "big" (from environment variable FLEETMQ_MQTT__MAX_PACKET_SIZE)'), e.message);
    assert.ok(e.message.includes('option "mqtt.queue_qos0": expected true or false, got "yes"'), e.message);
    assert.equal(e.problems.length, 2, 'all problems are reported at once');
  });

  test('bad CLI values (programmatic) name the option and the flag', () => {
    const e = configError(() => loadConfig({ argv: { mqttPort: 70000 }, env: {} }));
    assert.ok(e.message.includes('option "listeners.mqtt_port": expected an integer 0..65535, got 70000 (from command-line flag --mqtt-port)'), e.message);
  });

  test('topic filters in deny_subscribe are checked one by one', () => {
    const e = configError(() => loadDoc({ mqtt: { deny_subscribe: ['ok/+', 'a/#/b'] } }));
    assert.ok(e.message.includes('option "mqtt.deny_subscribe": item 1: expected a valid topic filter, got "a/#/b"'), e.message);
    for (const bad of ['', 'a+', 'a/b#', 5]) configError(() => loadDoc({ mqtt: { deny_subscribe: [bad] } }));
    assert.deepEqual(loadDoc({ mqtt: { deny_subscribe: ['#', '+/x/#', '$SYS/#'] } }).mqtt.deny_subscribe, ['#', '+/x/#', '$SYS/#']);
  });

  test('string checks: bind, ws_path, node.name', () => {
    assert.match(configError(() => loadDoc({ listeners: { bind: 'not an address!' } })).message, /option "listeners\.bind": expected an IP address or host name, got "not an address!"/);
    assert.match(configError(() => loadDoc({ listeners: { ws_path: 'mqtt' } })).message, /option "listeners\.ws_path": expected a URL path starting with "\/", got "mqtt"/);
    assert.match(configError(() => loadDoc({ node: { name: 'has space' } })).message, /option "node\.name": .*got "has space"/);
    assert.equal(loadDoc({ listeners: { bind: '::' } }).listeners.bind, '::');
    assert.equal(loadDoc({ listeners: { bind: 'localhost' } }).listeners.bind, 'localhost');
  });

  test('a section that is not an object', () => {
    const e = configError(() => loadDoc({ mqtt: 5 }));
    assert.ok(e.message.includes('option "mqtt": expected an object, got 5'), e.message);
    configError(() => loadDoc({ listeners: { tls: [] } }));
    configError(() => loadDoc([1, 2]));
  });

  test('files that do not exist or are not readable files', () => {
    const missing = tmp.file('nope.pem');
    const e = configError(() => loadDoc({ auth: { password_file: missing } }));
    assert.ok(e.message.includes(`option "auth.password_file": cannot read file ${JSON.stringify(missing)}: no such file`), e.message);
    const sub = tmp.file('a-directory');
    mkdirSync(sub, { recursive: true });
    const e2 = configError(() => loadDoc({ auth: { acl_file: sub } }));
    assert.ok(e2.message.includes(`option "auth.acl_file": ${JSON.stringify(sub)} is not a regular file`), e2.message);
    const e3 = configError(() => loadConfig({ argv: {}, env: { FLEETMQ_LISTENERS__TLS__CERT: missing, FLEETMQ_LISTENERS__TLS__KEY: missing } }));
    assert.ok(e3.message.includes('option "listeners.tls.cert": cannot read file'), e3.message);
    assert.ok(e3.message.includes('option "listeners.tls.key": cannot read file'), e3.message);
    if (process.getuid?.() !== 0) {
      const unreadable = tmpFile('x', 'unreadable.pem');
      execFileSync('chmod', ['000', unreadable]);
      assert.match(configError(() => loadDoc({ listeners: { tls: { ca: unreadable } } })).message, /option "listeners\.tls\.ca": cannot read file .*permission denied/);
    }
  });

  test('port collisions', () => {
    const e = configError(() => loadDoc({ listeners: { ws_port: 1883 } }));
    assert.ok(e.message.includes('option "listeners.ws_port": port 1883 is also used by listeners.mqtt_port'), e.message);
    // Disabled listeners do not collide.
    const cfg = loadDoc({ listeners: { mqtt_port: 0, ws_port: 0, http_port: 0 } });
    assert.deepEqual([cfg.listeners.mqtt_port, cfg.listeners.ws_port], [0, 0]);
  });
});

describe('TLS', () => {
  let cert: string;
  let key: string;
  let ca: string;
  before(() => {
    cert = tmpFile('-----BEGIN CERTIFICATE-----', 'cert.pem');
    key = tmpFile('-----BEGIN PRIVATE KEY-----', 'key.pem');
    ca = tmpFile('-----BEGIN CERTIFICATE-----', 'ca.pem');
  });

  test('without cert + key, mqtts_port and wss_port become 0 (warning when set explicitly)', () => {
    const warnings: string[] = [];
    const cfg = loadDoc({ listeners: { mqtts_port: 9883, wss_port: 9084 } }, {}, { onWarning: (w) => warnings.push(w) });
    assert.equal(cfg.listeners.mqtts_port, 0);
    assert.equal(cfg.listeners.wss_port, 0);
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.match(warnings[0] ?? '', /listeners\.mqtts_port.*9883.*has no effect/);
  });

  test('with cert + key, TLS ports are kept', () => {
    const cfg = loadDoc({ listeners: { mqtts_port: 9883, tls: { cert, key } } });
    assert.equal(cfg.listeners.mqtts_port, 9883);
    assert.equal(cfg.listeners.wss_port, 8084);
    assert.equal(cfg.listeners.tls.cert, cert);
  });

  test('cert without key, and key without cert', () => {
    assert.match(configError(() => loadDoc({ listeners: { tls: { cert } } })).message, /option "listeners\.tls\.key": required when listeners\.tls\.cert is set/);
    assert.match(configError(() => loadDoc({ listeners: { tls: { key } } })).message, /option "listeners\.tls\.cert": required when listeners\.tls\.key is set/);
  });

  test('request_cert requires ca; cn_as_username requires request_cert', () => {
    assert.match(configError(() => loadDoc({ listeners: { tls: { cert, key, request_cert: true } } })).message, /option "listeners\.tls\.request_cert": true requires listeners\.tls\.ca/);
    assert.match(configError(() => loadDoc({ listeners: { tls: { cert, key, ca, cn_as_username: true } } })).message, /option "listeners\.tls\.cn_as_username": true requires listeners\.tls\.request_cert/);
    const ok = loadDoc({ listeners: { tls: { cert, key, ca, request_cert: true, cn_as_username: true } } });
    assert.equal(ok.listeners.tls.cn_as_username, true);
  });
});

describe('config file problems', () => {
  test('unknown keys are errors naming the key path, with a suggestion', () => {
    const e = configError(() => loadDoc({ mqtt: { max_packt_size: 5 }, listeners: { tls: { certificate: 'x' } }, colour: 'blue' }));
    assert.ok(e.message.includes('unknown option "mqtt.max_packt_size"'), e.message);
    assert.ok(e.message.includes('did you mean "mqtt.max_packet_size"?'), e.message);
    assert.ok(e.message.includes('unknown option "listeners.tls.certificate"'), e.message);
    assert.ok(e.message.includes('unknown option "colour"'), e.message);
    assert.equal(e.problems.length, 3);
  });

  test('unknown option-like environment variables are errors', () => {
    const e = configError(() => loadConfig({ argv: {}, env: { FLEETMQ_MQTT__MAX_PACKT_SIZE: '5' } }));
    assert.ok(e.message.includes('unknown option "mqtt.max_packt_size" (from environment variable FLEETMQ_MQTT__MAX_PACKT_SIZE'), e.message);
    // Single underscore between section and key is a mistake too.
    configError(() => loadConfig({ argv: {}, env: { FLEETMQ_MQTT_MAX_PACKET_SIZE: '5' } }));
  });

  test('invalid JSON: file name and parse message', () => {
    const text = '{"mqtt": {"max_qos": 1,}}';
    const p = tmpFile(text, 'broken.json');
    let parseMessage = '';
    try {
      JSON.parse(text);
    } catch (err) {
      parseMessage = (err as Error).message;
    }
    const e = configError(() => loadConfig({ argv: { config: p }, env: {} }));
    assert.ok(e.message.includes(p), e.message);
    assert.ok(e.message.includes('not valid JSON'), e.message);
    assert.ok(parseMessage !== '' && e.message.includes(parseMessage), e.message);
  });

  test('missing config file', () => {
    const p = tmp.file('missing.json');
    const e = configError(() => loadConfig({ argv: { config: p }, env: {} }));
    assert.ok(e.message.includes(`cannot read config file ${JSON.stringify(p)}: no such file`), e.message);
  });
});

describe('shipped files', () => {
  test('deploy/fleetmq.example.json is the defaults plus deny_subscribe', () => {
    const cfg = loadConfig({ argv: {}, env: {}, file: new URL('deploy/fleetmq.example.json', ROOT).pathname });
    const expected = structuredClone(DEFAULTS) as Config;
    expected.listeners.mqtts_port = 0;
    expected.listeners.wss_port = 0;
    expected.mqtt.deny_subscribe = ['test/nosubscribe'];
    assert.deepEqual(cfg, expected);
    const doc = JSON.parse(readFileSync(new URL('deploy/fleetmq.example.json', ROOT), 'utf8')) as Record<string, Record<string, unknown>>;
    // Every option but the three host-dependent defaults is written out.
    const written = leafPaths(doc).sort();
    const all = OPTIONS.map((o) => o.path).filter((p) => p !== 'node.name' && p !== 'node.max_connections' && p !== 'node.workers');
    assert.deepEqual(written, all.sort());
  });

  test('deploy/fleetmq.production.json is valid once its files exist', () => {
    const doc = JSON.parse(readFileSync(new URL('deploy/fleetmq.production.json', ROOT), 'utf8')) as Config;
    // Its paths point at /etc/fleetmq; substitute readable files with the same names.
    const paths: Array<[string, string | null]> = [];
    const sub = (p: string | null): string | null => {
      if (p === null) return null;
      assert.match(p, /^\/etc\/fleetmq\//);
      paths.push([p, p]);
      return tmpFile('x', 'prod-' + p.split('/').pop());
    };
    doc.auth.password_file = sub(doc.auth.password_file);
    doc.auth.acl_file = sub(doc.auth.acl_file);
    doc.listeners.tls.cert = sub(doc.listeners.tls.cert);
    doc.listeners.tls.key = sub(doc.listeners.tls.key);
    doc.listeners.tls.ca = sub(doc.listeners.tls.ca);
    assert.equal(paths.length, 5);
    const cfg = loadDoc(doc);
    assert.equal(cfg.auth.allow_anonymous, false);
    assert.notEqual(cfg.listeners.mqtts_port, 0);
  });

  test('docs/config.md contains the generated option reference', () => {
    const md = readFileSync(new URL('docs/config.md', ROOT), 'utf8');
    const m = /<!-- options:begin[^>]*-->\n([\s\S]*?)<!-- options:end -->/.exec(md);
    assert.ok(m, 'markers missing in docs/config.md');
    assert.equal(m[1], renderOptionsMarkdown(), 'docs/config.md is out of date: regenerate the table with renderOptionsMarkdown() (see the comment in docs/config.md)');
  });
});
