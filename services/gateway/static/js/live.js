// Websocket client: JSON text messages + binary frames (u32 BE header length, JSON header, JPEG).
export class LiveSocket {
  constructor({ onMessage, onFrame, onState }) {
    this.onMessage = onMessage;
    this.onFrame = onFrame;
    this.onState = onState;
    this.cameras = new Set();
    this.retry = 500;
    this.decoder = new TextDecoder();
    this.connect();
  }

  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = () => {
      this.retry = 500;
      this.onState("live");
      if (this.cameras.size) this.send({ type: "subscribe", cameras: [...this.cameras] });
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        this.onMessage(msg);
        return;
      }
      const view = new DataView(ev.data);
      const n = view.getUint32(0);
      const header = JSON.parse(this.decoder.decode(new Uint8Array(ev.data, 4, n)));
      this.onFrame(header, new Uint8Array(ev.data, 4 + n));
    };
    ws.onclose = () => {
      this.onState("offline");
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  setCameras(ids) {
    const want = new Set(ids);
    const add = [...want].filter((c) => !this.cameras.has(c));
    const drop = [...this.cameras].filter((c) => !want.has(c));
    this.cameras = want;
    if (add.length) this.send({ type: "subscribe", cameras: add });
    if (drop.length) this.send({ type: "unsubscribe", cameras: drop });
  }
}
