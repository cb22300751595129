// The live event stream. EventSource cannot send headers, so the token goes in `access_token`
// (an extension the stream endpoint alone accepts). The browser resumes by itself with
// Last-Event-ID after a dropped connection; when it gives up (e.g. the server answered an error),
// a new EventSource continues from the last id it saw via `lastEventId`.

const KINDS = ["movement", "alarm", "shipment_event", "shipment", "device"];
const REOPEN_MS = 3000;

export function connectLive({ token, after, onEvent, onState, onGiveUp }) {
  let lastId = after;
  let source = null;
  let reopenTimer = null;
  let stopped = false;

  function open() {
    const params = new URLSearchParams({ access_token: token });
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
