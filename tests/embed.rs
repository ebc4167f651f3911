//! capbroker as a library in someone else's wasmtime embedding: their own
//! store type, their own linker, capbroker's interfaces added to it.

mod support;

use capbroker::core::Rights;
use capbroker::fs::DirHandle;
use capbroker::grants::HandleValue;
use capbroker::run::wit::App;
use capbroker::{BrokerCtx, BrokerCtxView, BrokerView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct MyState {
    table: ResourceTable,
    wasi: WasiCtx,
    broker: BrokerCtx,
}

impl WasiView for MyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl BrokerView for MyState {
    fn broker(&mut self) -> BrokerCtxView<'_> {
        BrokerCtxView {
            ctx: &mut self.broker,
            table: &mut self.table,
        }
    }
}

#[tokio::test]
async fn an_embedder_adds_capbroker_to_its_own_linker() {
    let tree = support::Tree::new();
    std::fs::create_dir_all(tree.path("root/reports")).unwrap();
    std::fs::write(tree.path("root/reports/a.txt"), "x y\n").unwrap();
    std::fs::write(tree.path("root/worker.conf"), "folder = reports\n").unwrap();

    // The embedder's own engine: no fuel or epochs, unlike capbroker's.
    let engine = Engine::new(&Config::new()).unwrap();
    let mut linker: Linker<MyState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    capbroker::add_to_linker(&mut linker).unwrap();
    let component = Component::from_file(&engine, support::guest("worker")).unwrap();
    let mut store = Store::new(
        &engine,
        MyState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            broker: BrokerCtx::new("embedded-worker", Default::default()),
        },
    );
    let app = App::instantiate_async(&mut store, &component, &linker)
        .await
        .unwrap();

    // Hand over two directory handles made by the embedder itself.
    let open = || cap_std::fs::Dir::open_ambient_dir(tree.root(), cap_std::ambient_authority());
    let mut grant = |name: &str, rights: Rights| {
        let dir = DirHandle::new(open().unwrap(), rights, name);
        store.data_mut().broker.grant(name, HandleValue::Dir(dir));
    };
    grant("cfg", Rights::READ);
    grant(
        "data",
        Rights::READ | Rights::WRITE | Rights::CREATE | Rights::LIST,
    );
    let result = app.call_run(&mut store, &[]).await.unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(
        tree.read("root/reports/summary.txt").as_deref(),
        Some("a.txt: 1 lines, 2 words\n")
    );
}
