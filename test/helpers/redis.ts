export { freePort, RedisServer as TestRedis, waitForReplica } from "../../scripts/redis-server.js";
