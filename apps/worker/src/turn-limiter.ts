/**
 * Lets at most `perTurn` callers through per turn of the event loop; the rest wait for the next
 * turn (a `setImmediate`). Between turns Node runs its timers, among them BullMQ's lock renewal.
 *
 * Why: thousands of jobs can become runnable in the same instant (a burst of fetch replies, a big
 * batch finishing), and their continuations would otherwise run back to back as one long chain
 * of microtasks. A chain longer than half the lock duration starves the lock renewal, and the
 * stalled-job checker then takes jobs away from a worker that is busy, not dead.
 */
export class TurnLimiter {
  private used = 0;
  private scheduled = false;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly perTurn: number) {}

  /** Resolves at once while this turn has room, else on a later turn. */
  pass(): Promise<void> {
    this.schedule();
    if (this.used < this.perTurn && this.waiting.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const admitted = this.waiting.splice(0, this.perTurn);
      this.used = admitted.length;
      for (const resolve of admitted) resolve();
      if (this.waiting.length > 0 || this.used > 0) this.schedule();
    });
  }
}
