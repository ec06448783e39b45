// SPDX-License-Identifier: Apache-2.0
// The Kubernetes API stand-in for tests: start one with startKubeApi(), point the real client at
// it with kubeConfigFor(). See server.ts for what it serves and the controls it offers.
export { API_SERVER_AUDIENCE, KubeApiServer, startKubeApi } from './server.ts';
export type { KubeApiOptions, RequestRecord, TokenUser, Verb } from './server.ts';
export { kubeConfigFor, kubeconfigYaml, writeKubeconfig } from './kubeconfig.ts';
export type { KubeconfigOptions } from './kubeconfig.ts';
export { API_RESOURCES } from './resources.ts';
export type { ApiResource, JsonObject } from './resources.ts';
export { Recorder } from './recorder.ts';
