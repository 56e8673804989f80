/**
 * Collects items and hands them over together: every item pushed before the flush goes out in
 * one call, so work requested by many callers at about the same time costs one Redis write
 * instead of one each. `tick` flushes once every continuation already queued has run (no wait
 * for another turn of the event loop: for work on a caller's critical path); `turn` flushes at the
 * end of the event-loop turn (the I/O callbacks of one turn join: for throughput). At `max` items
 * it flushes at once.
 */
export class TurnBuffer<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(
    private readonly flushItems: (items: T[]) => void,
    private readonly when: 'tick' | 'turn',
    private readonly max = Number.POSITIVE_INFINITY,
  ) {}

  push(item: T): void {
    this.items.push(item);
    if (this.items.length >= this.max) this.flush();
    else this.schedule();
  }

  /** Hands over what is pending now, instead of when scheduled. */
  flush(): void {
    this.scheduled = false;
    const items = this.items;
    if (items.length === 0) return;
    this.items = [];
    this.flushItems(items);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      if (this.scheduled) this.flush();
    };
    if (this.when === 'tick') process.nextTick(run);
    else setImmediate(run);
  }
}
