// aedes on 127.0.0.1 for picogate's broker matrix (tests/_brokers.py starts it).
//
//   node broker.mjs NODE_MODULES PORT [--user NAME:PASSWORD] [--tls-port PORT --cert F --key F]
//
// NODE_MODULES is where `npm ci` installed aedes (tools/bootstrap.sh: .brokers/aedes/node_modules).
// Prints "ready" once every listener listens; ends on SIGTERM or when stdin closes.
import net from 'node:net'
import tls from 'node:tls'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [modules, portText, ...rest] = process.argv.slice(2)
const opts = {}
for (let i = 0; i < rest.length; i += 2) opts[rest[i].replace(/^--/, '')] = rest[i + 1]

const { Aedes } = await import(pathToFileURL(path.join(modules, 'aedes', 'aedes.js')).href)

const options = {}
if (opts.user) {
  const [name, password] = opts.user.split(':')
  options.authenticate = (client, username, pass, done) => {
    const ok = username === name && pass !== undefined && pass.toString() === password
    if (!ok) {
      const err = new Error('bad user name or password')
      err.returnCode = 4
      return done(err, false)
    }
    done(null, true)
  }
}
const broker = await Aedes.createBroker(options)

const servers = [net.createServer(broker.handle)]
const ports = [Number(portText)]
if (opts['tls-port']) {
  servers.push(tls.createServer({ cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key) }, broker.handle))
  ports.push(Number(opts['tls-port']))
}
await Promise.all(servers.map((server, i) => new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen(ports[i], '127.0.0.1', resolve)
})))
process.stdout.write('ready\n')

const stop = () => {
  for (const server of servers) server.close()
  broker.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.stdin.on('end', stop)
process.stdin.resume()
