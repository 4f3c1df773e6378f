// Where a download's bytes go while it arrives. In Chromium (and any browser with the
// origin-private file system) they stream to disk and are never held in memory; elsewhere
// they are kept in memory as a Blob, for files of at most BLOB_CAP bytes.
export const BLOB_CAP = 512 * 1024 * 1024;

const DIR = 'peershare';
const tab = Math.random().toString(36).slice(2);

async function tabDir() {
  const root = await navigator.storage.getDirectory();
  const all = await root.getDirectoryHandle(DIR, { create: true });
  return all.getDirectoryHandle(tab, { create: true });
}

/** Whether downloads stream to disk (the origin-private file system with writable files). */
export function streamsToDisk() {
  return (
    typeof navigator !== 'undefined' &&
    !!navigator.storage?.getDirectory &&
    typeof FileSystemFileHandle !== 'undefined' &&
    'createWritable' in FileSystemFileHandle.prototype
  );
}

/**
 * Remove what earlier pages left in the origin-private file system. Each page holds a
 * Web Lock named after its directory for as long as it lives; a directory whose lock is
 * free belongs to a page that is gone.
 */
export async function sweep() {
  if (!streamsToDisk() || !navigator.locks) return;
  navigator.locks.request(`${DIR}/${tab}`, () => new Promise(() => {}));
  const root = await navigator.storage.getDirectory();
  const all = await root.getDirectoryHandle(DIR, { create: true });
  for await (const [name] of all.entries()) {
    if (name === tab) continue;
    await navigator.locks.request(`${DIR}/${name}`, { ifAvailable: true }, async (lock) => {
      if (lock) await all.removeEntry(name, { recursive: true }).catch(() => {});
    });
  }
}

/** Bytes gathered before one write to disk: one call per MiB, not per message. */
const WRITE_BATCH = 1024 * 1024;

/** A file being written on disk; writes are queued in order, a MiB at a time. */
class DiskSink {
  static async create(id) {
    const dir = await tabDir();
    const handle = await dir.getFileHandle(`${id}.part`, { create: true });
    const writable = await handle.createWritable({ keepExistingData: false });
    return new DiskSink(dir, handle, writable, id);
  }

  constructor(dir, handle, writable, id) {
    Object.assign(this, { dir, handle, writable, id });
    this.chain = Promise.resolve();
    this.parts = [];
    this.gathered = 0;
    this.error = null;
  }

  write(bytes) {
    this.parts.push(bytes);
    this.gathered += bytes.byteLength;
    if (this.gathered >= WRITE_BATCH) this.flush();
  }

  flush() {
    if (this.parts.length === 0) return;
    const blob = new Blob(this.parts);
    this.parts = [];
    this.gathered = 0;
    this.chain = this.chain.then(async () => {
      if (this.error) return;
      try {
        await this.writable.write(blob);
      } catch (e) {
        this.error = e;
      }
    });
  }

  /** Every byte written and the file closed: a File (on disk) to hand to the person. */
  async finish() {
    this.flush();
    await this.chain;
    if (this.error) throw this.error;
    await this.writable.close();
    return this.handle.getFile();
  }

  async discard() {
    this.parts = [];
    await this.chain.catch(() => {});
    await this.writable.abort().catch(() => {});
    await this.dir.removeEntry(`${this.id}.part`).catch(() => {});
  }
}

/** The in-memory fallback. */
class BlobSink {
  constructor() {
    this.parts = [];
  }

  write(bytes) {
    this.parts.push(bytes);
  }

  async finish() {
    const blob = new Blob(this.parts);
    this.parts = [];
    return blob;
  }

  async discard() {
    this.parts = [];
  }
}

/** A sink for a download of `size` bytes; throws a CodedError-like {code} when none fits. */
export async function sinkFor(id, size) {
  if (streamsToDisk()) {
    try {
      return await DiskSink.create(id);
    } catch (e) {
      throw Object.assign(new Error(`cannot write to this browser's storage: ${e.message}`), { code: 5089 });
    }
  }
  if (size > BLOB_CAP) {
    throw Object.assign(new Error('this browser keeps downloads in memory, up to 512 MiB'), { code: 1185 });
  }
  return new BlobSink();
}
