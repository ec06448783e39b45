// SPDX-License-Identifier: Apache-2.0
// Child process of zds-native.test.ts: connects to the SOCK_SEQPACKET socket given as argv[2],
// receives one datagram with an fd, and reports over IPC what the fd is here (NS_GET_NSTYPE, its
// netns inode) and the netns of a listener created inside it through that fd.
import {
  POLL_READABLE,
  closeFd,
  listenTcp,
  namespaceType,
  netnsInode,
  pollClose,
  pollStart,
  seqpacketConnect,
  seqpacketRecv,
  socketNetnsInode,
} from '../../../src/shared/native/index.ts';

export interface ReceiverReport {
  fds: number;
  type: string | null;
  inode: number | undefined;
  listenerInode: number | undefined;
}

const path = process.argv[2];
if (path === undefined || process.send === undefined) throw new Error('usage: fork(receiver, [socketPath])');
const fd = seqpacketConnect(path);
const watcher = pollStart(fd, POLL_READABLE, (err) => {
  if (err !== null) throw err;
  const got = seqpacketRecv(fd, 1024, 1);
  if (got === null) return;
  pollClose(watcher);
  closeFd(fd);
  const [received] = got.fds;
  const report: ReceiverReport = {
    fds: got.fds.length,
    type: null,
    inode: undefined,
    listenerInode: undefined,
  };
  if (received !== undefined) {
    report.type = namespaceType(received);
    if (report.type === 'net') {
      report.inode = netnsInode(received);
      const listener = listenTcp({ netnsFd: received, host: '127.0.0.1', port: 0 });
      report.listenerInode = socketNetnsInode(listener);
      closeFd(listener);
    }
    closeFd(received);
  }
  process.send?.(report, () => process.exit(0));
});
