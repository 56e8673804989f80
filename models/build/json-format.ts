/**
 * Deterministic JSON serialisation that matches the repo's Biome formatter (2-space indent, 120 columns), so the
 * files the build writes (`manifest.json`, `cars-mpg.eval.json`) pass `biome check` without a reformat step and a
 * rebuild never produces a formatting-only diff.
 *
 * Rules (Biome's, for the shapes we emit): non-empty objects are always expanded one key per line; an array of
 * primitives stays on one line if it fits, otherwise numbers are "filled" several per line and other values go one
 * per line; arrays containing objects or arrays are expanded.
 */

const LINE_WIDTH = 120;
const INDENT = '  ';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Serialises `value` (plain JSON data only) followed by a newline. */
export function formatJson(value: unknown): string {
  return `${format(value as Json, 0, 0, 0)}\n`;
}

function isPrimitive(v: Json): v is null | boolean | number | string {
  return v === null || typeof v !== 'object';
}

/**
 * @param prefix columns already used on the current line before this value
 * @param suffix columns that follow the value on the same line (a trailing comma)
 */
function format(value: Json, depth: number, prefix: number, suffix: number): string {
  if (isPrimitive(value)) {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error(`cannot write ${value} as JSON`);
    return JSON.stringify(value);
  }
  const pad = INDENT.repeat(depth + 1);
  const close = INDENT.repeat(depth);
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    if (value.every(isPrimitive)) {
      const items = value.map((v) => JSON.stringify(v));
      const flat = `[${items.join(', ')}]`;
      if (prefix + flat.length + suffix <= LINE_WIDTH) return flat;
      if (value.every((v) => typeof v === 'number')) {
        const lines: string[] = [];
        let line = '';
        items.forEach((item, i) => {
          const piece = i < items.length - 1 ? `${item},` : item;
          if (line === '') line = piece;
          else if (pad.length + line.length + 1 + piece.length <= LINE_WIDTH) line += ` ${piece}`;
          else {
            lines.push(line);
            line = piece;
          }
        });
        lines.push(line);
        return `[\n${lines.map((l) => pad + l).join('\n')}\n${close}]`;
      }
    }
    const parts = value.map((v, i) => pad + format(v, depth + 1, pad.length, i < value.length - 1 ? 1 : 0));
    return `[\n${parts.join(',\n')}\n${close}]`;
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return '{}';
  const parts = entries.map(([k, v], i) => {
    const key = `${JSON.stringify(k)}: `;
    return pad + key + format(v, depth + 1, pad.length + key.length, i < entries.length - 1 ? 1 : 0);
  });
  return `{\n${parts.join(',\n')}\n${close}}`;
}
