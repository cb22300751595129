// The live event stream. EventSource cannot send headers, and the API token must never appear in a
// URL (server and proxy logs, history), so each EventSource gets a short-lived stream ticket
// (POST /stream-tickets, valid 60 s) in `ticket`. The browser resumes by itself with Last-Event-ID
// after a dropped connection while the ticket is valid; when it gives up (an expired ticket, a
// server error), a new EventSource with a fresh ticket continues from the last id it saw via
// `lastEventId`.

const KINDS = ["movement", "alarm", "shipment_event", "shipment", "device"];
const REOPEN_MS = 3000;

export function connectLive({ ticket, after, onEvent, onState, onGiveUp }) {
  let lastId = after;
  let source = null;
  let reopenTimer = null;
  let stopped = false;

  async function open() {
    let current;
    try {
      current = await ticket();
    } catch {
      onState("offline");
      reopenTimer = setTimeout(async () => { if (!stopped && (await onGiveUp())) open(); }, REOPEN_MS);
      return;
    }
    if (stopped) return;
    const params = new URLSearchParams({ ticket: current });
    if (lastId !== null && lastId !== undefined) params.set("lastEventId", String(lastId));
    source = new EventSource(`/api/v1/events/stream?${params}`);
    source.addEventListener("ready", () => onState("live"));
    for (const kind of KINDS) {
      source.addEventListener(kind, (e) => {
        lastId = e.lastEventId;
        onEvent(kind, JSON.parse(e.data), e.lastEventId);
      });
    }
    source.addEventListener("error", () => {
      if (stopped) return;
      if (source.readyState === EventSource.CLOSED) {
        onState("offline");
        clearTimeout(reopenTimer);
        reopenTimer = setTimeout(async () => {
          if (stopped) return;
          if (await onGiveUp()) open();
        }, REOPEN_MS);
      } else {
        onState("reconnecting");
      }
    });
  }

  open();
  return {
    close() {
      stopped = true;
      clearTimeout(reopenTimer);
      if (source) source.close();
    },
  };
}
