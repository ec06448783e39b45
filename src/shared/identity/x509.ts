// SPDX-License-Identifier: Apache-2.0
// The one place that loads @peculiar/x509: installs the Reflect metadata polyfill it needs
// (./reflect-metadata.ts), then points its crypto provider at Node's WebCrypto. Everything in the
// project (and tests) should import `x509` from here rather than from '@peculiar/x509' directly,
// otherwise tsyringe throws "requires a reflect polyfill" when the module is loaded first.
import './reflect-metadata.ts';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto);

export { x509 };
