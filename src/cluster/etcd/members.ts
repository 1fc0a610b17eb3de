// Membership of a managed etcd cluster: list, add and remove members through the running
// cluster (etcd's Cluster RPC service), and the whole join of a new managed member.
//
// Joining is etcd's steps: MemberAdd through the existing cluster (which returns the
// member list the new one bootstraps from), then starting the new member with
// --initial-cluster-state=existing and that list, in an empty data dir. A voting member
// counts in the quorum from MemberAdd on, started or not (a 1-member cluster then needs
// both), so joinManagedEtcd adds a raft learner, which never counts, and promotes it once
// it has caught up; a join whose start fails removes the member again.
//
// Member IDs are shown in hex, as etcd's logs and etcdctl show them.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3, IMember } from 'etcd3';
import { etcdClient } from './client.js';
import {
  ManagedEtcdError,
  etcdUrl,
  hasMember,
  preflight,
  startManagedEtcd,
  type ManagedEtcd,
  type ManagedEtcdOptions,
} from './managed.js';

export interface EtcdMember {
  /** Member ID in hex. */
  id: string;
  /** Empty while the member has not started (etcd learns the name from the member). */
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  started: boolean;
  isLearner: boolean;
}

function toMember(m: IMember): EtcdMember {
  return {
    id: BigInt(m.ID).toString(16),
    name: m.name,
    peerURLs: [...(m.peerURLs ?? [])],
    clientURLs: [...(m.clientURLs ?? [])],
    started: m.name !== '',
    isLearner: m.isLearner ?? false,
  };
}

/** etcd's decimal uint64 (the etcd3 client's longs are decimal strings). */
function decimalId(hexId: string): string {
  return BigInt('0x' + hexId).toString();
}

async function withClient<T>(clientUrls: readonly string[], what: string, fn: (c: Etcd3) => Promise<T>): Promise<T> {
  if (clientUrls.length === 0) throw new ManagedEtcdError('ETCD_BAD_OPTIONS', `${what}: no etcd client URL given`);
  const c = etcdClient(clientUrls);
  try {
    return await fn(c);
  } catch (e) {
    if (e instanceof ManagedEtcdError) throw e;
    throw new ManagedEtcdError('ETCD_MEMBER_OP_FAILED', `${what} through ${clientUrls.join(',')}: ${(e as Error).message}`);
  } finally {
    c.close();
  }
}

/** The cluster's members, as the member behind one of `clientUrls` sees them. */
export function listMembers(clientUrls: readonly string[]): Promise<EtcdMember[]> {
  return withClient(clientUrls, 'etcd member list', async (c) => (await c.cluster.memberList({ linearizable: true })).members.map(toMember));
}

/** etcd's --initial-cluster for a member named `name` with `peerUrl`, from the member list (as etcdctl builds it). */
export function initialClusterOf(members: readonly EtcdMember[], newId: string, name: string): string {
  const parts: string[] = [];
  for (const m of members) for (const u of m.peerURLs) parts.push(`${m.id === newId ? name : m.name}=${u}`);
  return parts.join(',');
}

export interface AddedMember {
  initialCluster: string;
  /** Hex. */
  memberId: string;
  /** Added as a raft learner (promoteMember once it has caught up). */
  isLearner: boolean;
  /** true when an unstarted member with this peer URL already existed (a retried join). */
  reused: boolean;
  members: EtcdMember[];
}

/**
 * MemberAdd of `peerUrl` (a raft learner with `learner: true`) through the cluster at
 * `clientUrls`; returns the --initial-cluster the new member (named `name`) starts with. A retry finds the member it added before
 * (same peer URL, not started) and reuses it; a started member with that peer URL is
 * ETCD_MEMBER_EXISTS.
 */
export function addMember(clientUrls: readonly string[], peerUrl: string, name: string, opts: { learner?: boolean } = {}): Promise<AddedMember> {
  return withClient(clientUrls, `etcd member add ${name} (${peerUrl})`, async (c) => {
    const existing = async (): Promise<AddedMember | null> => {
      const members = (await c.cluster.memberList({ linearizable: true })).members.map(toMember);
      const same = members.find((m) => m.peerURLs.includes(peerUrl));
      if (!same) return null;
      if (same.started) {
        throw new ManagedEtcdError(
          'ETCD_MEMBER_EXISTS',
          `etcd member ${same.name} (${same.id}) already has peer URL ${peerUrl} and has started: remove it first (removeMember) to add a new member there`,
        );
      }
      return { initialCluster: initialClusterOf(members, same.id, name), memberId: same.id, isLearner: same.isLearner, reused: true, members };
    };
    const before = await existing();
    if (before) return before;
    let res;
    try {
      res = await c.cluster.memberAdd({ peerURLs: [peerUrl], isLearner: opts.learner ?? false });
    } catch (e) {
      // A concurrent or retried add got there first.
      if (/already exists/i.test((e as Error).message)) {
        const again = await existing();
        if (again) return again;
      }
      throw e;
    }
    const id = BigInt(res.member.ID).toString(16);
    const members = res.members.map(toMember);
    return { initialCluster: initialClusterOf(members, id, name), memberId: id, isLearner: res.member.isLearner ?? false, reused: false, members };
  });
}

/**
 * Removes the member with this ID (hex or decimal) or name; returns it. ETCD_MEMBER_NOT_FOUND
 * if none. etcd (--strict-reconfig-check) refuses to remove a running member until every
 * member that stays has been connected for 5 s ("unhealthy cluster"), e.g. just after a
 * join: that answer is retried for up to `retryMs` (default 10 s).
 */
export async function removeMember(clientUrls: readonly string[], nameOrId: string, retryMs = 10_000): Promise<EtcdMember> {
  const end = Date.now() + retryMs;
  for (;;) {
    try {
      return await removeOnce(clientUrls, nameOrId);
    } catch (e) {
      if (!(e instanceof ManagedEtcdError) || e.code !== 'ETCD_MEMBER_OP_FAILED' || !/unhealthy cluster/.test(e.message) || Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function removeOnce(clientUrls: readonly string[], nameOrId: string): Promise<EtcdMember> {
  if (nameOrId === '') return Promise.reject(new ManagedEtcdError('ETCD_BAD_OPTIONS', 'etcd member remove: empty name or ID'));
  return withClient(clientUrls, `etcd member remove ${nameOrId}`, async (c) => {
    const members = (await c.cluster.memberList({ linearizable: true })).members.map(toMember);
    const lower = nameOrId.toLowerCase();
    const byId = (m: EtcdMember) => m.id === lower || (/^[0-9]+$/.test(nameOrId) && decimalId(m.id) === nameOrId);
    const target = members.find(byId) ?? members.find((m) => m.name === nameOrId);
    if (!target) {
      throw new ManagedEtcdError(
        'ETCD_MEMBER_NOT_FOUND',
        `no etcd member named or with ID "${nameOrId}" (members: ${members.map((m) => `${m.name || '(unstarted)'}=${m.id}`).join(', ')})`,
      );
    }
    await c.cluster.memberRemove({ ID: decimalId(target.id) });
    return target;
  });
}

export interface JoinOptions extends Omit<ManagedEtcdOptions, 'clusterState' | 'initialCluster' | 'waitHealthy'> {
  /** Client URLs of members of the running cluster to join. */
  clientUrls: readonly string[];
  /**
   * Join as a raft learner and promote it to a voting member once it has caught up
   * (default true). A plain voting member counts in the quorum from MemberAdd on, before it
   * has even started: a 1-member cluster then needs both and stops serving until the new
   * member runs, and if that start fails it cannot even commit the member's removal.
   * A learner never counts until promoted.
   */
  asLearner?: boolean;
}

/**
 * Joins a new managed member to the running cluster at `clientUrls`: checks everything
 * that can be checked first (options, binary, data dir, ports), adds the member (a learner
 * by default), starts it (clusterState existing) in its empty data dir, promotes it when it
 * is in sync, and waits until it is healthy (all within startTimeoutMs).
 *
 * A data dir that already holds a member is a restart when the cluster lists a member with
 * this name (or not yet started) and this peer URL (a learner left by an interrupted join is
 * promoted); otherwise it is refused (ETCD_DATA_DIR_IN_USE: it belongs to another cluster,
 * or its member was removed). If the start fails, the process is stopped, the member is
 * removed again (unless it is a started voting member) and the member directory that etcd
 * made is deleted, so that the join can be retried.
 */
export async function joinManagedEtcd(opts: JoinOptions): Promise<ManagedEtcd> {
  const { clientUrls, asLearner = true, ...rest } = opts;
  const base: ManagedEtcdOptions = { ...rest, clusterState: 'existing', waitHealthy: false };
  const r = await preflight(base);
  const deadline = Date.now() + r.startTimeoutMs;
  const peerUrl = etcdUrl(r.host, r.peerPort);
  const log = opts.log.child({ etcd_member: r.name });

  const finish = async (m: ManagedEtcd, id: string, learner: boolean): Promise<ManagedEtcd> => {
    if (learner) {
      await promoteWhenReady(clientUrls, id, m, deadline);
      log.info('etcd.member_promoted', { member_id: id });
    }
    await m.waitHealthy(Math.max(1, deadline - Date.now()));
    return m;
  };

  if (hasMember(r.dataDir)) {
    const members = await listMembers(clientUrls);
    const mine = members.find((m) => m.peerURLs.includes(peerUrl) && (m.name === r.name || !m.started));
    if (!mine) {
      throw new ManagedEtcdError(
        'ETCD_DATA_DIR_IN_USE',
        `etcd data dir ${r.dataDir} already holds a member, but the cluster at ${clientUrls.join(',')} has no member ${r.name} with peer URL ${peerUrl} ` +
          `(members: ${members.map((m) => `${m.name || '(unstarted)'}=${m.peerURLs.join('|')}`).join(', ')}): ` +
          `it belongs to another cluster or was removed; move ${join(r.dataDir, 'member')} away to join afresh`,
      );
    }
    log.info('etcd.join_restart', { member_id: mine.id, peer_url: peerUrl, learner: mine.isLearner });
    const m = await startManagedEtcd(base);
    try {
      return await finish(m, mine.id, mine.isLearner);
    } catch (e) {
      await m.stop(2000);
      throw e;
    }
  }

  const added = await addMember(clientUrls, peerUrl, r.name, { learner: asLearner });
  log.info('etcd.member_added', { member_id: added.memberId, reused: added.reused, learner: added.isLearner, initial_cluster: added.initialCluster });
  let m: ManagedEtcd | null = null;
  try {
    m = await startManagedEtcd({ ...base, initialCluster: added.initialCluster });
    return await finish(m, added.memberId, added.isLearner);
  } catch (e) {
    await m?.stop(2000);
    await rollback(clientUrls, added.memberId, r.dataDir, log);
    throw e;
  }
}

/** MemberPromote of a learner (hex ID), once: etcd refuses while the learner lags the leader. */
export function promoteMember(clientUrls: readonly string[], memberId: string): Promise<void> {
  return withClient(clientUrls, `etcd member promote ${memberId}`, async (c) => {
    await c.cluster.memberPromote({ ID: decimalId(memberId) });
  });
}

/** etcd refuses to promote a learner that lags the leader: retried until `deadline` while `m` runs. */
async function promoteWhenReady(clientUrls: readonly string[], memberId: string, m: ManagedEtcd, deadline: number): Promise<void> {
  for (;;) {
    if (m.state === 'failed' || m.state === 'stopped') {
      throw m.error ?? new ManagedEtcdError('ETCD_STOPPED', `etcd member ${m.name} stopped before its promotion`, m.logTail());
    }
    try {
      return await promoteMember(clientUrls, memberId);
    } catch (e) {
      const msg = (e as Error).message;
      if (!/in sync|not ready|unhealthy|not enough started|too many requests|timed out|deadline/i.test(msg)) throw e;
      if (Date.now() > deadline) {
        throw new ManagedEtcdError('ETCD_START_TIMEOUT', `etcd learner ${m.name} (${memberId}) not promoted before the start timeout: ${msg}`, m.logTail());
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function rollback(clientUrls: readonly string[], memberId: string, dataDir: string, log: ManagedEtcdOptions['log']): Promise<void> {
  try {
    const m = (await listMembers(clientUrls)).find((x) => x.id === memberId);
    if (m && m.started && !m.isLearner) {
      log.warn('etcd.join_rollback_skipped', { member_id: memberId, reason: 'the member started as a voting member: left in the cluster' });
      return;
    }
    if (m) await removeMember(clientUrls, memberId, 3000);
    // The join began in an empty data dir: what etcd wrote there belongs to the removed member.
    rmSync(join(dataDir, 'member'), { recursive: true, force: true });
    log.warn('etcd.join_rolled_back', { member_id: memberId });
  } catch (e) {
    log.error('etcd.join_rollback_failed', { member_id: memberId, error: e });
  }
}

/**
 * Leaves the cluster: removes `member` through `clientUrls` (other members' client URLs,
 * or its own), then stops its process. Its data dir is then useless (etcd refuses to start
 * a removed member); the caller deletes it.
 */
export async function leaveManagedEtcd(member: ManagedEtcd, clientUrls: readonly string[], stopTimeoutMs = 10_000): Promise<void> {
  try {
    await removeMember(clientUrls, member.name);
  } finally {
    await member.stop(stopTimeoutMs);
  }
}
