// The routing API: Gateway API HTTPRoute/GRPCRoute and Kedge's
// FaultInjection, validated (documents.ts) and compiled into per-port
// matchers (compile.ts) that the forwarding engine calls per request
// (types.ts is the contract, apply.ts the helpers for a matched target).
export * from './types';
export * from './model';
export { validateRouteDocument, parseRouteDocument, isRouteDocument, documentLabel, type RouteValidation, type RouteValidateOptions } from './documents';
export { compileServiceRoutes, literalPrefix, queryValue, type RouteService } from './compile';
export { pickBackend, modifyPath, redirectLocation, type RedirectRequest } from './apply';
