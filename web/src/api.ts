// The public API as the page reaches it: gRPC-Web to the gRPC port, with the caller's token.
// Every view goes through these clients, exactly as a viewer extension would.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ImageService } from "./gen/diptych/v1/images_pb";
import { InfoService } from "./gen/diptych/v1/info_pb";
import { SearchService } from "./gen/diptych/v1/search_pb";

/** Where the gRPC port answers, as the server's HTTP port describes it (/page-config.json). */
export interface PageConfig {
  grpc_port: number;
  grpc_tls: boolean;
}

/** The three clients of the page. */
export interface Api {
  baseUrl: string;
  image: Client<typeof ImageService>;
  info: Client<typeof InfoService>;
  search: Client<typeof SearchService>;
}

const TOKEN_KEY = "diptych.token";

/** The API token kept for this browser tab only. */
export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

/** Keeps (or, when empty, forgets) the API token for this tab. */
export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

/** The clients, over gRPC-Web in binary protobuf, to the gRPC port on the page's host. */
export async function connect(): Promise<Api> {
  const answer = await fetch("page-config.json");
  const config = (await answer.json()) as PageConfig;
  const scheme = config.grpc_tls ? "https" : "http";
  const baseUrl = `${scheme}://${location.hostname}:${config.grpc_port}`;
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [bearer] });
  return {
    baseUrl,
    image: createClient(ImageService, transport),
    info: createClient(InfoService, transport),
    search: createClient(SearchService, transport),
  };
}

/** A refusal or failure in words a user can act on: the gRPC code and the server's message. */
export function explain(error: unknown, api: Api): string {
  const e = ConnectError.from(error);
  const name = Code[e.code] ?? String(e.code);
  if (e.code === Code.Unauthenticated) {
    return `${name}: ${e.rawMessage} — enter an API token above`;
  }
  if (e.code === Code.PermissionDenied) {
    return `${name}: ${e.rawMessage} — this token's role may not make this call`;
  }
  if (/fetch|network|load failed/i.test(e.rawMessage) || e.code === Code.Unknown && !e.rawMessage) {
    return (
      `cannot reach the API at ${api.baseUrl} from ${location.origin}: is diptych serving, and is ` +
      `this page's origin in grpc.web_allowed_origins? (${e.rawMessage})`
    );
  }
  return `${name}: ${e.rawMessage}`;
}
