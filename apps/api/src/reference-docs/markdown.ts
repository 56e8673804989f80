/** Longest line the generated pages write. */
export const LINE_WIDTH = 120;

/** Words of `text`, where a `code span` with spaces in it counts as part of one word. */
function words(text: string): string[] {
  const out: string[] = [];
  let current = '';
  let inCode = false;
  for (const char of text) {
    if (char === '`') inCode = !inCode;
    if (/\s/.test(char) && !inCode) {
      if (current) out.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  if (current) out.push(current);
  return out;
}

/**
 * `text` filled into lines of at most `LINE_WIDTH` characters (a word longer than that stands
 * alone), the first starting with `first` and the others with `rest`: `- ` and two spaces make
 * a list item.
 */
export function wrap(text: string, first = '', rest = first): string {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of words(text)) {
    if (!empty && line.length + 1 + word.length > LINE_WIDTH) {
      lines.push(line);
      line = rest + word;
    } else {
      line += empty ? word : ` ${word}`;
    }
    empty = false;
  }
  lines.push(line);
  return lines.join('\n');
}

/** A list item, wrapped. */
export const item = (text: string): string => wrap(text, '- ', '  ');

/** `value` as a code span. */
export const code = (value: string | number | boolean): string => `\`${value}\``;

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
export function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The pages end with one newline and hold no trailing spaces or runs of blank lines. */
export function page(blocks: string[]): string {
  return `${blocks
    .join('\n\n')
    .replace(/[ \t]+$/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim()}\n`;
}
