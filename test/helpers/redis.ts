export { freePort, RedisServer as TestRedis } from "../../scripts/redis-server.js";
