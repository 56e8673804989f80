/** The API's version: the OpenAPI document's `info.version` and `/health`'s `version`. */
export const API_VERSION = '1.0.0';
