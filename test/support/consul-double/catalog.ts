// The Consul double's state: nodes, service instances and checks of one
// datacenter, with a Raft-like index that every write bumps and blocking
// waiters that wake when the index they watch moves. No sockets here; the
// HTTP server in server.ts renders this state in Consul's wire shapes.
import { randomUUID } from 'node:crypto';

/** A Consul check status. */
export type CheckStatus = 'passing' | 'warning' | 'critical';

/** One service instance to register, with defaults for everything but service, address and port. */
export interface InstanceFixture {
  service: string;
  /** Service ID; defaults to `<service>-<address>-<port>`. Re-registering an ID replaces the instance. */
  id?: string;
  /** Service address (may be '' to fall back to the node address, as Consul does). */
  address: string;
  port: number;
  tags?: string[];
  meta?: Record<string, string>;
  /** Status of the instance's service check (default passing). */
  checks?: CheckStatus;
  /** Node name; defaults to `node-<nodeAddress>`. */
  node?: string;
  /** Node address; defaults to `address`. */
  nodeAddress?: string;
  nodeMeta?: Record<string, string>;
  weights?: { Passing: number; Warning: number };
  /** Service kind ('' for a typical service; 'connect-proxy', 'mesh-gateway', ...). */
  kind?: string;
}

interface NodeRecord {
  ID: string;
  Node: string;
  Address: string;
  Meta: Record<string, string>;
  serfStatus: CheckStatus;
  CreateIndex: number;
  ModifyIndex: number;
}

interface InstanceRecord {
  node: string;
  ID: string;
  Service: string;
  Tags: string[];
  Address: string;
  Port: number;
  Meta: Record<string, string>;
  Weights: { Passing: number; Warning: number };
  Kind: string;
  checkStatus: CheckStatus;
  checkModifyIndex: number;
  CreateIndex: number;
  ModifyIndex: number;
}

/** ACL view: which service names a request may read. */
export type ServiceFilter = (service: string) => boolean;

/** Nodes, instances and checks of one datacenter, with an index and blocking waiters. */
export class ConsulCatalog {
  /** The Raft index of the last write (Consul's never start at 0). */
  private index = 10;
  /** Index of the last write to the services table (what /v1/catalog/services reports). */
  private servicesIndex = 10;
  /** Index of the last write touching each service name. */
  private readonly serviceIndex = new Map<string, number>();
  private readonly nodes = new Map<string, NodeRecord>();
  /** Instances by service ID (unique across nodes in this double). */
  private readonly instances = new Map<string, InstanceRecord>();
  private readonly waiters = new Set<() => void>();

  constructor(readonly datacenter: string) {}

  /** Registers (or replaces) an instance; returns its service ID. */
  registerInstance(f: InstanceFixture): string {
    const id = f.id ?? `${f.service}-${f.address || f.nodeAddress}-${f.port}`;
    const nodeAddress = f.nodeAddress ?? f.address;
    const nodeName = f.node ?? `node-${nodeAddress}`;
    const idx = this.bump();
    let node = this.nodes.get(nodeName);
    if (!node) {
      node = { ID: randomUUID(), Node: nodeName, Address: nodeAddress, Meta: { 'consul-network-segment': '' }, serfStatus: 'passing', CreateIndex: idx, ModifyIndex: idx };
      this.nodes.set(nodeName, node);
    }
    if (f.nodeMeta) {
      node.Meta = { 'consul-network-segment': '', ...f.nodeMeta };
      node.ModifyIndex = idx;
      this.touchNode(nodeName, idx);
    }
    const previous = this.instances.get(id);
    if (previous && previous.Service !== f.service) this.serviceIndex.set(previous.Service, idx);
    this.instances.set(id, {
      node: nodeName,
      ID: id,
      Service: f.service,
      Tags: [...(f.tags ?? [])],
      Address: f.address,
      Port: f.port,
      Meta: { ...(f.meta ?? {}) },
      Weights: f.weights ?? { Passing: 1, Warning: 1 },
      Kind: f.kind ?? '',
      checkStatus: f.checks ?? 'passing',
      checkModifyIndex: idx,
      CreateIndex: previous?.CreateIndex ?? idx,
      ModifyIndex: idx,
    });
    this.serviceIndex.set(f.service, idx);
    this.servicesIndex = idx;
    this.wake();
    return id;
  }

  /** Removes an instance by service ID; returns whether it existed. */
  deregister(id: string): boolean {
    const inst = this.instances.get(id);
    if (!inst) return false;
    const idx = this.bump();
    this.instances.delete(id);
    this.serviceIndex.set(inst.Service, idx);
    this.servicesIndex = idx;
    this.wake();
    return true;
  }

  /** Sets the status of an instance's service check. */
  setCheckStatus(id: string, status: CheckStatus): void {
    const inst = this.instances.get(id);
    if (!inst) throw new Error(`consul double: no instance ${id}`);
    const idx = this.bump();
    inst.checkStatus = status;
    inst.checkModifyIndex = idx;
    this.serviceIndex.set(inst.Service, idx);
    this.wake();
  }

  /** Sets a node's serfHealth check, which every instance on it inherits. */
  setNodeHealth(node: string, status: CheckStatus): void {
    const n = this.nodes.get(node);
    if (!n) throw new Error(`consul double: no node ${node}`);
    const idx = this.bump();
    n.serfStatus = status;
    n.ModifyIndex = idx;
    this.touchNode(node, idx);
    this.wake();
  }

  /** Bumps the index without changing data, as unrelated Raft writes do in a real cluster. */
  touch(service?: string): void {
    const idx = this.bump();
    if (service) this.serviceIndex.set(service, idx);
    this.wake();
  }

  /** The index /v1/catalog/services reports. */
  catalogIndex(): number {
    return this.servicesIndex;
  }

  /** The index /v1/health/service/<name> reports: the service's last write, else the table's. */
  healthIndex(service: string): number {
    return this.serviceIndex.get(service) ?? this.servicesIndex;
  }

  /** `/v1/catalog/services`: service name to the union of its instances' tags. */
  catalogServices(canRead: ServiceFilter): { body: Record<string, string[]>; filtered: boolean } {
    const out: Record<string, Set<string>> = {};
    let filtered = false;
    for (const inst of this.instances.values()) {
      if (!canRead(inst.Service)) {
        filtered = true;
        continue;
      }
      const tags = (out[inst.Service] ??= new Set());
      for (const t of inst.Tags) tags.add(t);
    }
    const body: Record<string, string[]> = {};
    for (const name of Object.keys(out).sort()) body[name] = [...out[name]!].sort();
    return { body, filtered };
  }

  /** `/v1/health/service/<name>`: entries shaped exactly as Consul returns them, ordered by node. */
  healthService(service: string, opts: { passingOnly: boolean; tag?: string | undefined }, canRead: ServiceFilter): { body: unknown[]; filtered: boolean } {
    if (!canRead(service)) return { body: [], filtered: [...this.instances.values()].some((i) => i.Service === service) };
    const entries = [...this.instances.values()]
      .filter((i) => i.Service === service && (opts.tag === undefined || i.Tags.includes(opts.tag)))
      .sort((a, b) => a.node.localeCompare(b.node) || a.ID.localeCompare(b.ID))
      .map((inst) => this.healthEntry(inst))
      .filter((e) => !opts.passingOnly || e.Checks.every((c) => c.Status === 'passing'));
    return { body: entries, filtered: false };
  }

  /** Resolves when `indexOf()` exceeds `after`, or when `waitMs` elapses; `cancel` stops waiting early. */
  waitFor(indexOf: () => number, after: number, waitMs: number): { done: Promise<void>; cancel(): void } {
    let cancel = () => {};
    const done = new Promise<void>((resolve) => {
      if (indexOf() > after) return resolve();
      const check = () => {
        if (indexOf() > after) finish();
      };
      const timer = setTimeout(() => finish(), waitMs);
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      cancel = finish;
      this.waiters.add(check);
    });
    return { done, cancel: () => cancel() };
  }

  private healthEntry(inst: InstanceRecord) {
    const node = this.nodes.get(inst.node)!;
    return {
      Node: {
        ID: node.ID,
        Node: node.Node,
        Address: node.Address,
        Datacenter: this.datacenter,
        TaggedAddresses: { lan: node.Address, lan_ipv4: node.Address, wan: node.Address, wan_ipv4: node.Address },
        Meta: { ...node.Meta },
        CreateIndex: node.CreateIndex,
        ModifyIndex: node.ModifyIndex,
      },
      Service: {
        Kind: inst.Kind,
        ID: inst.ID,
        Service: inst.Service,
        Tags: [...inst.Tags],
        Address: inst.Address,
        TaggedAddresses: inst.Address ? { lan_ipv4: { Address: inst.Address, Port: inst.Port }, wan_ipv4: { Address: inst.Address, Port: inst.Port } } : null,
        // Consul renders an empty meta map as null.
        Meta: Object.keys(inst.Meta).length ? { ...inst.Meta } : null,
        Port: inst.Port,
        Weights: { ...inst.Weights },
        EnableTagOverride: false,
        Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
        Connect: {},
        PeerName: '',
        CreateIndex: inst.CreateIndex,
        ModifyIndex: inst.ModifyIndex,
      },
      Checks: [
        {
          Node: node.Node, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: node.serfStatus, Notes: '',
          Output: node.serfStatus === 'passing' ? 'Agent alive and reachable' : 'Agent not live or unreachable',
          ServiceID: '', ServiceName: '', ServiceTags: [], Type: '', Interval: '', Timeout: '', ExposedPort: 0, Definition: {},
          CreateIndex: node.CreateIndex, ModifyIndex: node.ModifyIndex,
        },
        {
          Node: node.Node, CheckID: `service:${inst.ID}`, Name: `Service '${inst.Service}' check`, Status: inst.checkStatus, Notes: '',
          Output: inst.checkStatus === 'passing' ? 'HTTP GET: 200 OK' : 'HTTP GET: 503 Service Unavailable',
          ServiceID: inst.ID, ServiceName: inst.Service, ServiceTags: [...inst.Tags], Type: 'http', Interval: '10s', Timeout: '5s', ExposedPort: 0, Definition: {},
          CreateIndex: inst.CreateIndex, ModifyIndex: inst.checkModifyIndex,
        },
      ],
    };
  }

  private touchNode(node: string, idx: number): void {
    for (const inst of this.instances.values()) if (inst.node === node) this.serviceIndex.set(inst.Service, idx);
  }

  private bump(): number {
    this.index += 1;
    return this.index;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
